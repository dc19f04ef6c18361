"""CLI conventions through :func:`relabel.cli.main`: ``--version``, ``--json`` (one JSON object on stdout,
an error too) on audit, sync, undo, accept, compare and explain, one ``--quiet`` spelling on every
subcommand, and ``--help`` texts that say what happens (the defaults printed are the defaults used). Label
Studio is the in-memory fake of ``tests/fake_label_studio.py`` (the real-server runs are in
test_audit_cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re

import pytest

from connectors.label_studio import LabelStudioConnector
from relabel.cli import build_parser, main
from relabel.commands.options import setting_default_text, settings_from_args
from relabel.settings import AuditSettings
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
        assert ("--json" in options) == (name in {"audit", "sync", "undo", "accept", "compare", "explain"}), (
            name
        )


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
    assert payload["model"] == "logistic" and payload["model_choice"]["model"] == "logistic"
    assert [c["model"] for c in payload["model_choice"]["candidates"]] == ["logistic"]


def test_audit_text_summary_has_the_triage_line(fake_server, capsys) -> None:
    _, project_id, _ = fake_server
    assert main(["audit", "--project", str(project_id), "--top", "6", "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "triage of the flagged items: " in out and "estimated label errors in the project" in out
    assert "model logistic, method self_influence" in out  # --model auto (the default) chose logistic:
    assert "model auto → logistic on " in out and "60 items, fewer than the 200" in out  # too few to compare


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
    assert "--json reports one audit" in json.loads(capsys.readouterr().out)["error"]  # an error, as JSON


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


# ------------------------------------------------------------------------------ help tells the truth


def help_of(name: str) -> str:
    return subcommands()[name].format_help()


def option_actions(name: str) -> dict[str, argparse.Action]:
    return {
        action.option_strings[-1]: action
        for action in subcommands()[name]._actions
        if action.option_strings and action.help != argparse.SUPPRESS
    }


DEFAULT_CLAIM = re.compile(r"\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)")


def test_every_audit_setting_flag_is_made_from_its_field() -> None:
    """One source for a setting's flag: type, choices, default and help all come from the AuditSettings
    field; the audit parser has a flag for every field, and reading the flags back gives the defaults."""
    audit = {action.dest: action for action in subcommands()["audit"]._actions}
    for item in dataclasses.fields(AuditSettings):
        action = audit[item.name]
        assert action.default == item.default, item.name
        assert action.choices == item.metadata["choices"] or (
            action.choices is None and item.metadata["choices"] is None
        ), item.name
        assert action.help.replace("%%", "%").startswith(item.metadata["help"]), item.name
        assert f"(default: {setting_default_text(item.name)})" in action.help.replace("%%", "%"), item.name
    args = build_parser().parse_args(["audit", "--project", "3"])
    assert settings_from_args(args) == AuditSettings()  # the defaults printed are the defaults used
    # nightly TOML keys are the same fields
    from relabel.nightly import PROJECT_KEYS

    assert set(AuditSettings.keys()) <= PROJECT_KEYS


def test_every_default_printed_in_help_is_the_default_used() -> None:
    """Each "(default: X)" in every subcommand's --help names the value the option really gets."""
    checked = 0
    settings_names = set(AuditSettings.keys())
    for name in subcommands():
        for flag, action in option_actions(name).items():
            claims = DEFAULT_CLAIM.findall(" ".join((action.help or "").replace("%%", "%").split()))
            if not claims:
                continue
            claim = claims[-1]
            checked += 1
            if action.dest in settings_names:
                assert claim == setting_default_text(action.dest), (name, flag)
                field_default = {f.name: f.default for f in dataclasses.fields(AuditSettings)}[action.dest]
                assert action.default == field_default, (name, flag)
            elif isinstance(action.default, bool) or action.default is None:
                continue  # a switch, or a default described in words (checked below where it matters)
            else:
                default = action.default
                used = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
                assert claim.split(";")[0].split(" ")[0] == used, (name, flag, claim)
    assert checked >= 30


def test_help_texts_state_what_happens() -> None:
    from relabel.selection import DEFAULT_TOP_FRACTION, number_to_flag

    audit = " ".join(help_of("audit").split())
    assert "(default: project)" in audit and AuditSettings().queue == "project"
    assert "as a view in project" not in audit and "normalised suspicion" not in audit
    assert "score = mislabeling = the task's suspicion" in audit and "not the model's confidence" in audit
    assert "suggested label pre-filled" in audit and "current label pre-filled" not in audit
    # --top-fraction's printed default is the share used when neither --top nor --top-fraction is given
    assert f"(default: {DEFAULT_TOP_FRACTION} when --top is not given)" in audit
    assert number_to_flag(1000, None, None) == math.ceil(DEFAULT_TOP_FRACTION * 1000)
    undo = " ".join(help_of("undo").split())
    assert "Annotations are never touched" not in undo
    assert "the annotations `relabel accept` added" in undo
    explain = option_actions("explain")
    assert "--top" not in explain and "--per-side" in explain  # one meaning for --top: the N most suspicious
    for name in ("audit", "rank"):
        assert "most suspicious" in option_actions(name)["--top"].help
    assert "10" in explain["--from"].help and "10" in explain["--per-side"].help  # --from's limit is stated
    for name in ("explain", "compare", "rank"):
        assert "TF-IDF features)" not in option_actions(name)["--text-column"].help
    for name in ("audit", "sync", "undo", "accept", "explain"):
        api_key = option_actions(name)["--api-key-file"].help
        assert "default:" not in api_key and "read from $LABEL_STUDIO_API_KEY" in api_key
    assert "--dry-run" in option_actions("accept")


def test_explain_top_still_works_with_a_note(capsys) -> None:
    assert main(["explain", "--dataset", "iris", "--item", "3", "--top", "2"]) == 0
    captured = capsys.readouterr()
    assert "explain --top is deprecated; use --per-side" in captured.err
    assert captured.out.count("\n  ") >= 4


# ------------------------------------------------------------------------------ --json, errors too


def test_explain_json_matches_the_text(capsys) -> None:
    payload = run_json(capsys, ["explain", "--dataset", "iris", "--item", "70", "--per-side", "3", "--json"])
    assert payload["command"] == "explain" and payload["item"] == 70 and payload["n_items"] == 150
    assert len(payload["supports"]) == 3 and len(payload["opposes"]) == 3
    assert all(row["influence"] > 0 for row in payload["supports"])
    assert all(row["influence"] < 0 for row in payload["opposes"])
    assert 1 <= payload["self_influence_rank"] <= 150 and payload["self_influence"] > 0
    assert main(["explain", "--dataset", "iris", "--item", "70", "--per-side", "3"]) == 0
    text = capsys.readouterr().out
    assert f"rank {payload['self_influence_rank']} of 150" in text
    for row in payload["supports"] + payload["opposes"]:
        assert f"{row['influence']:+.6g}" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "--dataset", "iris", "--item", "99999", "--json"],  # a RelabelError
        ["audit", "--project", "three", "--json"],  # an argparse usage error
        ["accept", "--project", "3", "--tier", "nonsense", "--json"],
        ["sync", "--project", "3", "--json"],  # no URL
    ],
)
def test_errors_under_json_are_one_json_object(argv, capsys, monkeypatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out
    payload = json.loads(lines[0])
    assert payload["command"] == argv[0] and payload["exit_code"] == 2 and payload["error"]
    assert "\n" not in payload["error"] and captured.err == ""
    # the same error without --json: one line on stderr (argparse's usage error still exits 2)
    if argv[0] in ("explain", "sync"):
        assert main(argv[:-1]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("relabel: error: ")
        assert payload["error"] in captured.err


def test_a_locked_project_under_json_is_one_json_object_with_exit_code_3(monkeypatch, capsys) -> None:
    from relabel.errors import LockedError

    class Locked:
        url = "http://ls.test"

        def sync(self, *args, **kwargs):
            raise LockedError(
                "another relabel run (audit on host, pid 1) is writing project 3's review queue"
            )

    monkeypatch.setattr("relabel.commands.sync.connector_from_args", lambda args: Locked())
    assert main(["sync", "--project", "3", "--json"]) == 3
    payload = json.loads(capsys.readouterr().out)
    assert payload == {"command": "sync", "error": payload["error"], "exit_code": 3}
    assert "another relabel run" in payload["error"]
    assert main(["sync", "--project", "3"]) == 3
    assert capsys.readouterr().err.startswith("relabel: error: another relabel run")
