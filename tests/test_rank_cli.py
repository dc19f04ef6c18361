"""`relabel rank` end to end on files, and its one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from relabel.cli import main


@pytest.fixture
def iris_csv(tmp_path: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    frame.insert(0, "item", np.arange(500, 500 + len(y)))
    frame["species"] = np.array(["setosa", "versicolor", "virginica"])[y]
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rank_writes_ranking_with_ids_and_labels(iris_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ranking.parquet"
    code, _, err = run_cli(
        [
            "rank",
            str(iris_csv),
            "--label-column",
            "species",
            "--id-column",
            "item",
            "--methods",
            "self_influence,loss,margin,random",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    ranking = pd.read_parquet(out)
    assert len(ranking) == 150 and set(ranking["item"]) == set(range(500, 650))
    assert list(ranking["rank_self_influence"]) == list(range(1, 151))  # sorted, most suspicious first
    original = pd.read_csv(iris_csv).set_index("item")["species"]
    assert (ranking.set_index("item")["species"] == original.loc[ranking["item"]]).all()
    for column in ("self_influence", "loss", "margin", "random", "predicted_label", "predicted_probability"):
        assert column in ranking.columns
    assert (ranking["self_influence"] > 0).all()


def bad_file(tmp_path: Path, iris_csv: Path, edit) -> Path:
    frame = pd.read_csv(iris_csv)
    frame = edit(frame)
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def set_cell(row: int, column: str, value):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return edit


@pytest.mark.parametrize(
    ("edit", "extra", "expected"),
    [
        (set_cell(4, "petal_width", "abc"), [], ["petal_width", "6"]),  # CSV line 6 = data row 4
        (set_cell(9, "sepal_length", np.nan), [], ["sepal_length", "11"]),
        (lambda frame: frame, ["--feature-columns", "petal_length,nope"], ["nope"]),
        (lambda frame: frame.assign(species="setosa"), [], ["two classes"]),
        (set_cell(3, "species", "lonely"), [], ["lonely", "503"]),
    ],
    ids=["non-numeric", "nan", "unknown-column", "single-class", "class-with-one-item"],
)
def test_bad_input_exits_with_one_line(iris_csv, tmp_path, capsys, edit, extra, expected) -> None:
    path = bad_file(tmp_path, iris_csv, edit)
    code, _, err = run_cli(
        [
            "rank",
            str(path),
            "--label-column",
            "species",
            "--id-column",
            "item",
            "--out",
            str(tmp_path / "r.csv"),
            "--quiet",
            *extra,
        ],
        capsys,
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("relabel: error:"), err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[0]
    assert not (tmp_path / "r.csv").exists()


def test_unknown_label_column_names_the_columns(iris_csv, tmp_path, capsys) -> None:
    code, _, err = run_cli(
        ["rank", str(iris_csv), "--label-column", "kind", "--out", str(tmp_path / "r.csv")], capsys
    )
    assert code == 2 and "kind" in err and "species" in err


def test_rank_mixed_precision_gives_the_float64_ranking_and_says_which_precision_ran(
    iris_csv: Path, tmp_path: Path, capsys
) -> None:
    rankings, summaries = {}, {}
    for precision in ("float64", "mixed"):
        out = tmp_path / f"{precision}.csv"
        arguments = ["rank", str(iris_csv), "--label-column", "species", "--id-column", "item"]
        code, _, err = run_cli([*arguments, "--precision", precision, "--out", str(out), "--quiet"], capsys)
        assert code == 0, err
        rankings[precision] = pd.read_csv(out).set_index("item").sort_index()
        summaries[precision] = err
    assert (
        "solver exact: one Cholesky factor of the 15 × 15 logistic Hessian (float64, exact)"
        in summaries["float64"]
    )
    assert "(mixed: float32 products, float64 factor; estimated max relative error" in summaries["mixed"]
    np.testing.assert_allclose(
        rankings["mixed"]["self_influence"], rankings["float64"]["self_influence"], rtol=1e-5
    )  # the mixed path's default tolerance (float32 products: ≈ 1e-6 measured here)
