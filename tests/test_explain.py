"""relabel explain: influence(j → i) = g_jᵀ H⁻¹ g_i equals a brute-force computation; the CLI prints it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from relabel.errors import InputError
from relabel.report import explanations_for
from relabel.scorer import SuspicionScorer
from tests.reference import logistic_objective_torch
from tests.test_comparison import run_subcommand


def random_problem(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.5, size=(n_classes, d))
    y = rng.integers(0, n_classes, size=n)
    y[:n_classes] = np.arange(n_classes)
    y[n_classes : 2 * n_classes] = np.arange(n_classes)
    X = centres[y] + rng.normal(size=(n, d))
    return X, y


def brute_force_influences(X: np.ndarray, y: np.ndarray, scorer: SuspicionScorer, item: int) -> np.ndarray:
    """g_jᵀ H⁻¹ g_i for every j with H from torch.autograd.functional.hessian and torch.linalg.solve."""
    fit = scorer.logistic_fit
    objective, example_gradient = logistic_objective_torch(X, y, fit.n_classes, fit.l2)
    theta = torch.tensor(np.ascontiguousarray(fit.Theta.T).ravel())
    hessian = torch.autograd.functional.hessian(objective, theta)
    solved = torch.linalg.solve(hessian, example_gradient(theta, item))
    return np.array([float(example_gradient(theta, j) @ solved) for j in range(len(y))])


@pytest.mark.parametrize(("n_classes", "seed"), [(2, 0), (4, 1)])
def test_explain_equals_brute_force_influence(n_classes: int, seed: int) -> None:
    X, y = random_problem(60, 4, n_classes, seed)
    scorer = SuspicionScorer(l2=0.05).fit(X, y)
    item = 7
    expected = brute_force_influences(X, y, scorer, item)
    # the primitive: every j at once from the Cholesky factorisation
    gradient = scorer.solver.gradients.per_example_gradients(np.array([item]))[0]
    influence = scorer.solver.influence_on(gradient)
    np.testing.assert_allclose(influence, expected, rtol=1e-6, atol=1e-10 * np.abs(expected).max())
    # the self term is the self-influence
    assert influence[item] == pytest.approx(scorer.self_influence()[item], rel=1e-8)
    # the explanation: the top supporters are the largest influences, the top opposers the smallest
    table = scorer.explain(item, top=3)
    others = np.delete(np.arange(len(y)), item)
    by_value = others[np.argsort(-expected[others], kind="stable")]
    supports = table[table["role"] == "supports"]
    opposes = table[table["role"] == "opposes"]
    assert supports["row"].tolist() == [j for j in by_value[:3] if expected[j] > 0]
    assert opposes["row"].tolist() == [j for j in by_value[::-1][:3] if expected[j] < 0]
    np.testing.assert_allclose(table["influence"], expected[table["row"]], rtol=1e-6)
    assert table["label"].tolist() == [int(y[j]) for j in table["row"]]


def test_explanations_for_maps_rows_to_item_ids() -> None:
    X, y = random_problem(40, 3, 3, 2)
    ids = np.arange(500, 540)
    scorer = SuspicionScorer(l2=0.05).fit(X, y)
    explanations = explanations_for(scorer, ids, [4, 9, 17], top=2, block_size=2)  # two blocks
    assert set(explanations) == {504, 509, 517}
    table = explanations[509]
    assert (table["id"].to_numpy() == ids[table["row"].to_numpy()]).all()
    assert 509 not in table["id"].tolist()
    for position in (4, 9, 17):  # the batched computation is SuspicionScorer.explain, item by item
        expected = scorer.explain(position, top=2)
        got = explanations[ids[position]]
        assert got["role"].tolist() == expected["role"].tolist()
        assert got["row"].tolist() == expected["row"].tolist()
        assert got["label"].tolist() == expected["label"].tolist()
        np.testing.assert_allclose(got["influence"], expected["influence"], rtol=1e-9)


def test_explain_cli_prints_supporting_and_opposing_items(tmp_path, capsys) -> None:
    X, y = random_problem(50, 3, 3, 3)
    names = np.array(["cat", "dog", "fox"])
    frame = pd.DataFrame(X, columns=["f1", "f2", "f3"])
    frame.insert(0, "id", [f"item-{i:03d}" for i in range(len(y))])
    frame["label"] = names[y]
    path = tmp_path / "items.csv"
    frame.to_csv(path, index=False)
    code = run_subcommand(
        "relabel.commands.explain",
        ["explain", str(path), "--label-column", "label", "--id-column", "id", "--item", "item-011",
         "--per-side", "2", "--l2", "0.05"],
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    # the CLI featurizes as the audit does (robust z-scores per column); rebuild that fit and compare the rows
    from relabel.featurizers import TabularStandardizer

    standardised = TabularStandardizer().fit_transform(frame[["f1", "f2", "f3"]])
    classes = sorted(set(names))
    labels = np.array([classes.index(name) for name in names[y]])
    scorer = SuspicionScorer(l2=0.05).fit(standardised, labels)
    expected = scorer.explain(11, top=2)
    assert f"item item-011: given label {str(names[y[11]])!r}" in output
    lines = output.splitlines()
    for row in expected.itertuples():
        matching = [line for line in lines if line.strip().startswith(f"item-{row.row:03d} ")]
        assert matching, f"row item-{row.row:03d} missing from:\n{output}"
        fields = matching[0].split()
        assert fields[1] == classes[row.label]
        assert float(fields[2]) == pytest.approx(row.influence, rel=1e-4)
    assert "supports the label" in output and "opposes it" in output


def test_explain_cli_unknown_item_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(InputError, match="no item with id '99999'"):
        run_subcommand("relabel.commands.explain", ["explain", "--dataset", "iris", "--item", "99999"])


def test_relabel_cli_registers_compare_and_explain(capsys) -> None:
    from relabel.cli import main

    assert main(["explain", "--dataset", "iris", "--item", "99999"]) == 2
    assert "relabel: error: no item with id '99999'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0
    assert "--errors-from-sync" in capsys.readouterr().out


def test_explain_cli_on_a_label_studio_task(label_studio, tmp_path, capsys) -> None:
    from tests.test_nightly import CLASSES, seed_project

    project_id, task_ids = seed_project(label_studio, "explain", n_tasks=30, n_flipped=2)
    token_file = tmp_path / "token"
    token_file.write_text(label_studio.legacy_token)
    code = run_subcommand(
        "relabel.commands.explain",
        ["explain", "--url", label_studio.url, "--project", str(project_id),
         "--api-key-file", str(token_file), "--item", str(task_ids[0]), "--per-side", "3"],
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert output.startswith(f"item {task_ids[0]}: given label {CLASSES[1]!r}")  # task 0's label was flipped
    assert f"  open: {label_studio.url}/projects/{project_id}/data?task={task_ids[0]}" in output
    listed = [int(line.split()[0]) for line in output.splitlines() if line.strip()[:1].isdigit()]
    assert listed and set(listed) <= set(task_ids) and task_ids[0] not in listed
    assert label_studio.legacy_token not in output


@pytest.fixture(scope="module")
def audit_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An audit report folder of a small Label Studio-like text project (write_audit_report)."""
    from relabel.dataset import LabeledDataset
    from relabel.report import write_audit_report
    from relabel.selection import ranking_table

    X, y = random_problem(120, 4, 3, 5)
    y[::12] = (y[::12] + 1) % 3  # 10 flips
    classes = ["cat", "dog", "fox"]
    ids = np.arange(2000, 2120)
    dataset = LabeledDataset(
        ids=ids,
        inputs=[f"text of item {i}" for i in ids],
        kind="text",
        labels=np.array([classes[k] for k in y], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
        source={"type": "label_studio", "url": "http://ls.test:8080", "project_id": 4, "project_title": "t"},
    )
    scorer = SuspicionScorer(l2=0.05).fit(X, list(dataset.labels), classes=classes)
    table = ranking_table(dataset, scorer.scores(("self_influence", "loss")), "self_influence", 12)
    folder = tmp_path_factory.mktemp("audit-report")
    write_audit_report(folder, dataset, scorer, table, method="self_influence", n_flagged=12)
    return {"folder": folder, "scorer": scorer, "table": table, "ids": ids}


def test_explain_from_an_audit_folder_does_not_fit(audit_folder, monkeypatch, capsys) -> None:
    from relabel.cli import main

    def no_fit(*args, **kwargs):
        raise AssertionError("explain --from must not fit a model")

    monkeypatch.setattr(SuspicionScorer, "fit", no_fit)
    monkeypatch.setattr("relabel.report.explanations_for", no_fit)
    table, scorer, ids = audit_folder["table"], audit_folder["scorer"], audit_folder["ids"]
    flagged = table.loc[table["flagged"], "task_id"].tolist()
    item = flagged[1]
    code = main(["explain", "--from", str(audit_folder["folder"]), "--item", str(item), "--per-side", "3"])
    output = capsys.readouterr().out
    assert code == 0, output
    row = table[table["task_id"] == item].iloc[0]
    assert output.startswith(f"item {item}: given label {row['current_label']!r}")
    assert "(rank 2 of 120, 1 = most suspicious)" in output
    assert f"  open: http://ls.test:8080/projects/4/data?task={item}" in output
    assert "no refit" in output and "tier: " in output
    # the listed items are what SuspicionScorer.explain gives (computed before fit was patched)
    position = int(np.flatnonzero(ids == item)[0])
    expected = scorer.explain(position, top=3)
    lines = [line for line in output.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == len(expected)
    for line, expected_row in zip(lines, expected.itertuples(), strict=True):
        fields = line.split()
        assert int(fields[0]) == ids[expected_row.row]
        assert float(fields[2]) == pytest.approx(expected_row.influence, rel=1e-5)
        assert fields[-1] == f"http://ls.test:8080/projects/4/data?task={fields[0]}"
        assert ("⚑" in fields) == (int(fields[0]) in flagged)
    assert any("⚑" in line for line in lines)


def test_explain_from_refuses_an_unflagged_item_and_a_second_source(audit_folder, capsys) -> None:
    from relabel.cli import main

    table = audit_folder["table"]
    unflagged = int(table.loc[~table["flagged"], "task_id"].iloc[0])
    assert main(["explain", "--from", str(audit_folder["folder"]), "--item", str(unflagged)]) == 2
    assert f"item {unflagged} was not flagged by the audit" in capsys.readouterr().err
    assert main(["explain", "--from", str(audit_folder["folder"]), "--dataset", "iris", "--item", "1"]) == 2
    assert "give no file, --dataset or --project" in capsys.readouterr().err
    assert main(["explain", "--from", str(audit_folder["folder"] / "missing"), "--item", "1"]) == 2
    assert "is not an audit report folder" in capsys.readouterr().err
