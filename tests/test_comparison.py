"""relabel compare: noise injection, the method comparison on digits, the files it writes, the CLI."""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_iris

from relabel.comparison import (
    ComparisonConfig,
    compare_methods,
    errors_found_curve,
    fraction_column,
)
from relabel.errors import InputError
from relabel.noise import inject_label_noise


def run_subcommand(module_name: str, argv: list[str]) -> int:
    """Parse ``argv`` with only this subcommand registered and run it (as relabel.cli.main would)."""
    parser = argparse.ArgumentParser(prog="relabel")
    subparsers = parser.add_subparsers(dest="command", required=True)
    importlib.import_module(module_name).register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


# ---------------------------------------------------------------- noise
def test_uniform_noise_flips_exactly_the_rate_to_other_classes() -> None:
    labels = np.repeat(np.arange(5), 40)
    noisy = inject_label_noise(labels, 0.1, kind="uniform", seed=3)
    assert noisy.n_flipped == 20
    assert np.array_equal(noisy.flipped, noisy.labels != labels)
    assert np.array_equal(noisy.original, labels)
    again = inject_label_noise(labels, 0.1, kind="uniform", seed=3)
    assert np.array_equal(again.labels, noisy.labels)
    other_seed = inject_label_noise(labels, 0.1, kind="uniform", seed=4)
    assert not np.array_equal(other_seed.flipped, noisy.flipped)


def test_pair_noise_moves_class_k_to_k_plus_one() -> None:
    labels = np.repeat(np.arange(4), 50)
    noisy = inject_label_noise(labels, 0.25, kind="pair", seed=0)
    assert noisy.n_flipped == 50
    flipped = noisy.flipped
    assert np.array_equal(noisy.labels[flipped], (labels[flipped] + 1) % 4)


def test_transition_noise_follows_the_matrix_and_rejects_bad_input() -> None:
    labels = np.repeat(np.arange(3), 30)
    matrix = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=float)
    noisy = inject_label_noise(labels, 0.5, kind="transition", transition=matrix, seed=1)
    assert np.array_equal(noisy.labels[noisy.flipped], matrix.argmax(axis=1)[labels[noisy.flipped]])
    with pytest.raises(InputError):
        inject_label_noise(labels, 1.5)
    with pytest.raises(InputError):
        inject_label_noise(labels, 0.1, kind="transition")


def test_errors_found_curve_counts_errors_in_rank_order() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7])
    is_error = np.array([True, False, False, False, True])
    curve = errors_found_curve(scores, is_error, np.array([0.0, 0.2, 0.4, 0.6, 1.0]))
    assert curve.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


# ---------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits_comparison():
    X, y = load_digits(return_X_y=True)
    config = ComparisonConfig(seeds=(0,), cv_folds=3, noise="uniform", rate=0.1)
    return compare_methods(X / 16.0, y, config, description="digits, 10% uniform flips")


def test_digits_self_influence_and_loss_find_flips_random_does_not(digits_comparison) -> None:
    summary = digits_comparison.summary.set_index("method")
    at_10 = f"{fraction_column(0.1)}_mean"
    print(digits_comparison.table())
    assert summary.loc["self_influence", at_10] >= 0.85
    assert summary.loc["loss", at_10] >= 0.85
    assert abs(summary.loc["self_influence", at_10] - summary.loc["loss", at_10]) <= 0.08
    assert summary.loc["confident_learning", at_10] >= 0.8
    assert 0.02 <= summary.loc["random", at_10] <= 0.2  # ≈ 10 %: a random order finds errors at the base rate
    assert summary.loc["random", at_10] < summary.loc["self_influence", at_10] / 3
    assert summary.loc["self_influence", "auroc_mean"] >= 0.95
    assert 0.35 <= summary.loc["random", "auroc_mean"] <= 0.65
    assert (
        summary.loc["self_influence", "average_precision_mean"]
        > 5 * summary.loc["random", "average_precision_mean"]
    )
    per_seed = digits_comparison.per_seed
    assert (per_seed["n_errors"] == round(0.1 * per_seed["n_train"])).all()
    # fixing the errors the top 10 % holds cannot make things much worse than the noisy model
    fixed = summary.loc["self_influence", "test_accuracy_fixed_mean"]
    assert fixed >= per_seed["test_accuracy_noisy"].iloc[0] - 0.01


def test_comparison_writes_csv_and_a_valid_png(digits_comparison, tmp_path) -> None:
    paths = digits_comparison.write(tmp_path)
    summary = pd.read_csv(paths["summary_csv"])
    assert list(summary["method"]) == ["self_influence", "loss", "margin", "confident_learning", "random"]
    for column in ("found_at_5pct_mean", "found_at_30pct_std", "auroc_mean", "average_precision_std"):
        assert column in summary.columns
    per_seed = pd.read_csv(paths["per_seed_csv"])
    assert len(per_seed) == 5
    with Image.open(paths["plot_png"]) as image:
        image.verify()
    with Image.open(paths["plot_png"]) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    red = np.abs(pixels - np.array([0xD6, 0x27, 0x28])).sum(axis=1) < 40  # the self_influence line
    assert red.sum() > 100


# ---------------------------------------------------------------- CLI
def test_compare_cli_on_iris_with_two_seeds(tmp_path, capsys) -> None:
    code = run_subcommand(
        "relabel.commands.compare",
        ["compare", "--dataset", "iris", "--noise", "pair", "--rate", "0.1", "--seeds", "0,1", "--folds", "3",
         "--out", str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert "self_influence" in output and "found_at_10pct" in output and "±" in output
    summary = pd.read_csv(tmp_path / "comparison.csv")
    assert (summary["n_seeds"] == 2).all()
    assert summary["found_at_10pct_std"].notna().all()
    assert (tmp_path / "comparison.png").stat().st_size > 1000


def test_compare_cli_with_a_known_error_column(tmp_path, capsys) -> None:
    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame["id"] = np.arange(1000, 1000 + len(y))
    noisy = inject_label_noise(y, 0.1, seed=5)
    frame["label"] = noisy.labels
    frame["is_wrong"] = np.where(noisy.flipped, "yes", "no")
    frame["fixed_label"] = y
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    code = run_subcommand(
        "relabel.commands.compare",
        ["compare", str(path), "--label-column", "label", "--id-column", "id", "--error-column", "is_wrong",
         "--true-label-column", "fixed_label", "--seeds", "0", "--folds", "3", "--out", str(tmp_path / "out"),
         "--no-progress"],
    )  # fmt: skip
    assert code == 0
    summary = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("method")
    # the known-error column and the true labels must not leak into the features
    assert summary.loc["self_influence", "found_at_30pct_mean"] > summary.loc["random", "found_at_30pct_mean"]
    assert 0 < summary.loc["self_influence", "n_errors_mean"] <= noisy.n_flipped


def test_compare_cli_rejects_noise_and_error_column_together(tmp_path) -> None:
    with pytest.raises(InputError, match="either --noise or --error-column"):
        run_subcommand(
            "relabel.commands.compare",
            [
                "compare",
                "--dataset",
                "iris",
                "--noise",
                "uniform",
                "--error-column",
                "x",
                "--out",
                str(tmp_path),
            ],
        )


# ---------------------------------------------------------------- known errors from `relabel sync`
def test_compare_uses_reviewer_decisions_recorded_by_sync(label_studio, tmp_path, capsys) -> None:
    """Push a review project, let a "reviewer" fix 6 wrong labels and confirm 4 right ones, sync, compare."""
    from connectors.label_studio import LabelStudioConnector
    from relabel.dataset import FlaggedItem
    from tests.label_studio_seeding import annotate, choice_result, export_tasks
    from tests.test_nightly import CLASSES, seed_project

    project_id, task_ids = seed_project(label_studio, "compare from sync", n_tasks=60, n_flipped=6)
    wrong_positions = [i * 7 for i in range(6)]
    truth = {task_ids[i]: CLASSES[i % 3] for i in range(60)}
    reviewed = [task_ids[i] for i in wrong_positions] + [task_ids[i] for i in (1, 2, 3, 4)]
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    queue = connector
    items = [
        FlaggedItem(task_id, rank + 1, 1.0 - rank / 20, truth[task_id])
        for rank, task_id in enumerate(reviewed)
    ]
    queue.push(project_id, items, mode="project", method="self_influence")
    review_project = queue.review_project(project_id)
    for task in export_tasks(label_studio, int(review_project["id"])):
        source = int(task["data"]["relabel_source_task"])
        annotate(label_studio, int(task["id"]), choice_result(truth[source]))
    queue.sync(project_id)

    token_file = tmp_path / "token"
    token_file.write_text(label_studio.legacy_token)
    code = run_subcommand(
        "relabel.commands.compare",
        ["compare", "--url", label_studio.url, "--project", str(project_id),
         "--api-key-file", str(token_file), "--errors-from-sync", "--seeds", "0", "--folds", "3",
         "--test-fraction", "0.25",
         "--out", str(tmp_path / "out"), "--no-progress"],
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert "10 reviewed, 6 labels changed by reviewers" in output
    per_seed = pd.read_csv(tmp_path / "out" / "comparison_per_seed.csv")
    assert (per_seed["n_errors"] == 6).all()  # the test part is drawn from items not marked as errors
    assert (tmp_path / "out" / "comparison.png").exists()
