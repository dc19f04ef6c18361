"""CLI conventions through :func:`relabel.cli.main`: ``--version``, ``--json`` (one JSON object on stdout) on
audit, sync, undo and compare, and one ``--quiet`` spelling on every subcommand. Label Studio is the in-memory
fake of ``tests/fake_label_studio.py`` (the real-server runs are in test_audit_cli.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from connectors.label_studio import LabelStudioConnector
from relabel.cli import build_parser, main
from relabel.triage import TIERS
from tests.test_pipeline_unit import choice, seeded


def test_version(capsys) -> None:
    from relabel import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"relabel {__version__}"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_spells_quiet_the_same_and_json_where_promised() -> None:
    for name, parser in subcommands().items():
        options = {option for action in parser._actions for option in action.option_strings}
        assert "--quiet" in options, name
        assert ("--json" in options) == (name in {"audit", "sync", "undo", "accept", "compare"}), name


@pytest.fixture
def fake_server(monkeypatch):
    client, project_id, _, flipped = seeded()
    connector = LabelStudioConnector(client=client)
    for module in ("audit", "sync", "undo"):
        monkeypatch.setattr(f"relabel.commands.{module}.connector_from_args", lambda args: connector)
    return client, project_id, flipped


def run_json(capsys, argv: list[str]) -> dict:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out  # one JSON object, nothing else on stdout
    return json.loads(lines[0])


def test_audit_json_holds_the_summary_numbers_triage_and_urls(fake_server, capsys, tmp_path) -> None:
    client, project_id, flipped = fake_server
    report = tmp_path / "report"
    payload = run_json(
        capsys, ["audit", "--project", str(project_id), "--top", "6", "--report", str(report), "--json"]
    )
    assert payload["command"] == "audit" and payload["project_id"] == project_id
    assert payload["n_labeled"] == 60 and payload["n_flagged"] == 6 and len(payload["flagged_task_ids"]) == 6
    assert payload["url"].startswith(client.url) and payload["push"]["n_flagged"] == 6
    assert payload["report"] == str(report / "report.html") and payload["report_dir"] == str(report)
    assert set(payload["triage"]["tiers"]) == set(TIERS) and sum(payload["triage"]["tiers"].values()) == 6
    assert set(payload["flagged_task_ids"]) & flipped
    # in-sample TF-IDF fit memorises: the estimate may well be 0 here (relabel/triage.py, "Bias")
    assert isinstance(payload["triage"]["estimated_label_errors"]["total"], int)
    assert set(payload["seconds"]) >= {"pull", "fit", "score", "push", "report"}


def test_audit_text_summary_has_the_triage_line(fake_server, capsys) -> None:
    _, project_id, _ = fake_server
    assert main(["audit", "--project", str(project_id), "--top", "6", "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "triage of the flagged items: " in out and "estimated label errors in the project" in out


def test_sync_and_undo_json(fake_server, capsys) -> None:
    client, project_id, _ = fake_server
    audit = run_json(
        capsys, ["audit", "--project", str(project_id), "--top", "3", "--queue", "project", "--json"]
    )
    review_id = audit["push"]["review_project_id"]
    first = client.export_tasks(review_id)[0]
    client.add_annotation(first["id"], choice(first["data"]["relabel_suggested"]))
    synced = run_json(capsys, ["sync", "--project", str(project_id), "--json", "--quiet"])
    assert synced["command"] == "sync" and synced["reviewed"] == 1 and synced["annotations_added"] == 1
    assert synced["review_project_url"] == f"{client.url}/projects/{review_id}/"
    assert synced["source_project_url"] == f"{client.url}/projects/{project_id}/"
    undone = run_json(capsys, ["undo", "--project", str(project_id), "--json", "--quiet"])
    assert undone["command"] == "undo" and undone["review_project_deleted"] == review_id
    assert undone["project_url"] == f"{client.url}/projects/{project_id}/"


def test_audit_json_refuses_the_nightly_mode(capsys, tmp_path) -> None:
    assert main(["audit", "--config", str(tmp_path / "audit.toml"), "--json"]) == 2
    assert "--json reports one audit" in capsys.readouterr().err


def test_compare_json(capsys, tmp_path) -> None:
    payload = run_json(
        capsys,
        ["compare", "--dataset", "iris", "--noise", "uniform", "--rate", "0.1", "--seeds", "0",
         "--methods", "self_influence,loss,random", "--folds", "3", "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert payload["command"] == "compare" and "iris" in payload["description"]
    assert [row["method"] for row in payload["methods"]] == ["self_influence", "loss", "random"]
    assert 0.0 <= payload["methods"][0]["auroc_mean"] <= 1.0
    assert payload["methods"][0]["auroc_std"] is None  # one seed: no spread (NaN becomes null)
    assert payload["files"]["summary_csv"] == str(tmp_path / "comparison.csv")
    assert payload["files"]["plot_png"] == str(tmp_path / "comparison.png")
