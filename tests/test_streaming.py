"""`relabel rank --stream`: the exact ranking of a tabular file read in row chunks, against the in-memory
path (identical when the scaling sample holds every row), the reservoir's uniformity, the effect of a
sampled scaling, and the file errors of later chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

import relabel
from relabel.cli import main
from relabel.errors import InputError
from relabel.featurizers import TabularStandardizer
from relabel.streaming import RowReservoir, stream_rank

METHODS = ("self_influence", "loss", "margin")


@pytest.fixture(scope="module")
def digits_frame() -> pd.DataFrame:
    X, y = load_digits(return_X_y=True)
    return pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]).assign(label=y)


def in_memory_scores(frame: pd.DataFrame, gradient_tolerance: float = 1e-10) -> pd.DataFrame:
    features = TabularStandardizer().fit_transform(frame.drop(columns="label"))
    return relabel.rank(
        features, frame["label"].to_numpy(), methods=METHODS, gradient_tolerance=gradient_tolerance
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_streamed_scores_equal_the_in_memory_ones_when_the_sample_holds_every_row(
    digits_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    """Both fits stop at ‖∇J‖ ≤ 1e-10, so their Θ̂ differ by ≤ 1e-10/λ = 1e-7: scores agree to 1e-6."""
    path = tmp_path / f"digits{suffix}"
    digits_frame.to_parquet(path) if suffix == ".parquet" else digits_frame.to_csv(path, index=False)
    ranking = stream_rank(path, "label", chunk_rows=250, methods=METHODS, gradient_tolerance=1e-10)
    reference = in_memory_scores(digits_frame)
    assert ranking.sample_rows == len(digits_frame)  # 1,797 rows < the default sample: exact scaling
    for method in METHODS:
        np.testing.assert_allclose(ranking.scores[method], reference[method], rtol=1e-6, atol=1e-12)
    assert (ranking.scores["rank_self_influence"] == reference["rank_self_influence"]).all()
    assert list(ranking.scores["predicted_label"]) == [str(c) for c in reference["predicted_class"]]


def test_the_reservoir_keeps_each_row_with_equal_probability() -> None:
    reservoir = RowReservoir(1000, 1, seed=3)
    rows = np.arange(20_000, dtype=np.float64)[:, None]
    for start in range(0, len(rows), 777):
        reservoir.add(rows[start : start + 777])
    kept = reservoir.rows()[:, 0]
    assert len(kept) == 1000 and len(np.unique(kept)) == 1000
    per_quarter = np.bincount((kept // 5000).astype(int), minlength=4)
    # each quarter: Binomial-like count with mean 250, sd ≈ √(1000·¼·¾) ≈ 13.7; ±5 sd
    assert np.all(np.abs(per_quarter - 250) <= 70), per_quarter


def test_a_sampled_scaling_moves_the_medians_within_sampling_error_and_keeps_the_ranking(
    tmp_path: Path,
) -> None:
    """20,000 rows, scaling fitted on 2,000 sampled rows: each median within 5 standard errors
    (1.2533·σ/√R for normal columns), each IQR within 10 %, Spearman ≥ 0.999 with the exact-scaling scores
    and ≥ 90 % of the top 5 % in common."""
    rng = np.random.default_rng(0)
    n, d, n_classes = 20_000, 6, 3
    y = rng.integers(0, n_classes, size=n)
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) + y[:, None] * 0.8
    flipped = rng.random(n) < 0.05
    y[flipped] = (y[flipped] + 1) % n_classes
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)]).assign(label=y)
    frame.to_parquet(tmp_path / "data.parquet")
    sampled = stream_rank(
        tmp_path / "data.parquet", "label", chunk_rows=3000, sample_rows=2000, methods=METHODS
    )
    exact = stream_rank(tmp_path / "data.parquet", "label", chunk_rows=3000, sample_rows=n, methods=METHODS)
    assert sampled.sample_rows == 2000 and exact.sample_rows == n
    spread = X.std(axis=0)
    exact_median = np.median(X, axis=0)
    sample_scaler = _scaler_of(tmp_path / "data.parquet", 2000)
    assert np.all(np.abs(sample_scaler.center_ - exact_median) <= 5 * 1.2533 * spread / np.sqrt(2000))
    q1, q3 = np.quantile(X, [0.25, 0.75], axis=0)
    np.testing.assert_allclose(2 * sample_scaler.half_scale_ * 1.349, q3 - q1, rtol=0.10)
    correlation = spearmanr(sampled.scores["self_influence"], exact.scores["self_influence"]).statistic
    assert correlation >= 0.999
    top = n // 20
    common = np.intersect1d(
        np.argsort(-sampled.scores["self_influence"].to_numpy())[:top],
        np.argsort(-exact.scores["self_influence"].to_numpy())[:top],
    )
    assert len(common) >= 0.9 * top


def _scaler_of(path: Path, sample_rows: int) -> TabularStandardizer:
    """The scaler --stream fits: the same reservoir (seed 0) over the same chunks."""
    frame = pd.read_parquet(path).drop(columns="label").to_numpy()
    reservoir = RowReservoir(sample_rows, frame.shape[1])
    for start in range(0, len(frame), 3000):
        reservoir.add(frame[start : start + 3000])
    scaler = TabularStandardizer()
    scaler.fit_transform(reservoir.rows())
    return scaler


def test_bad_cells_and_repeated_ids_in_later_chunks_are_one_line_errors(
    digits_frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame = digits_frame.head(600).astype({"f3": object}).assign(item=np.arange(600))
    frame.loc[450, "f3"] = "abc"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"line 452, column 'f3' is 'abc', not a finite number"):
        stream_rank(tmp_path / "bad.csv", "label", id_column="item", chunk_rows=100)
    frame.loc[450, "f3"] = 1.0
    frame.loc[520, "item"] = 7
    frame.to_csv(tmp_path / "repeated.csv", index=False)
    with pytest.raises(InputError, match=r"data row 521 repeats id 7 of column 'item'; ids must be unique"):
        stream_rank(tmp_path / "repeated.csv", "label", id_column="item", chunk_rows=100)


def test_rank_stream_cli_writes_the_ranking_and_prints_peak_memory(
    digits_frame: pd.DataFrame, tmp_path: Path, capsys
) -> None:
    digits_frame.to_parquet(tmp_path / "digits.parquet")
    out = tmp_path / "ranking.csv"
    arguments = ["rank", str(tmp_path / "digits.parquet"), "--stream", "--chunk-rows", "400"]
    assert main([*arguments, "--top", "50", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "ranked 1797 items (10 classes) with logistic, streamed in chunks of 400 rows" in err
    assert "scaling from 1,797 sampled rows" in err and "peak memory" in err and "MiB (RSS)" in err
    ranking = pd.read_csv(out)
    assert len(ranking) == 50 and list(ranking["rank_self_influence"]) == list(range(1, 51))
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    code = main([*arguments, "--text-column", "f1", "--model", "mlp", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "--stream ranks tabular files with the exact logistic model only; drop --text-column, --model mlp"
        in err
    )
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
