"""``relabel audit`` / ``sync`` / ``undo`` end to end through :func:`relabel.cli.main`, on a real server."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.label_studio.queue_plan import VIEW_TITLE, review_marker
from relabel.cli import main
from relabel.triage import TIERS
from scripts.local_label_studio import find_free_port
from tests.browser import Browser
from tests.label_studio_seeding import (
    annotate,
    choice_result,
    create_project,
    export_tasks,
    get_json,
    import_tasks,
    text_classification_config,
    text_tasks,
)

POSITIVE_WORDS = ["great", "lovely", "wonderful", "excellent", "superb", "delightful", "brilliant", "happy"]
NEGATIVE_WORDS = ["awful", "terrible", "horrible", "dreadful", "poor", "sad", "broken", "useless"]


def _sentiment_project(
    server: Any, n_tasks: int = 60, n_flipped: int = 4, seed: int = 7
) -> tuple[int, set[int]]:
    """A text project whose words give the label away, ``n_flipped`` labels flipped: (id, flipped ids)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n_tasks):
        positive = i % 2 == 0
        words = rng.sample(POSITIVE_WORDS if positive else NEGATIVE_WORDS, 3)
        texts.append(" ".join(words) + f" review number {i}")
        labels.append("pos" if positive else "neg")
    flipped_rows = rng.sample(range(n_tasks), n_flipped)
    for row in flipped_rows:
        labels[row] = "neg" if labels[row] == "pos" else "pos"
    project_id = create_project(server, text_classification_config(["pos", "neg"]), title="CLI sentiment")
    task_ids = import_tasks(server, project_id, text_tasks(texts, labels))
    return project_id, {task_ids[row] for row in flipped_rows}


def test_audit_end_to_end_with_a_personal_access_token(
    label_studio, monkeypatch, capsys, tmp_path: Path
) -> None:
    project_id, flipped = _sentiment_project(label_studio)
    token = label_studio.personal_access_token()
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)

    code = main(
        ["audit", "--project", str(project_id), "--top", "6", "--queue", "view", "--report", str(tmp_path)]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert token not in captured.out + captured.err
    views = [
        v
        for v in get_json(label_studio, "/api/dm/views/", project=project_id)
        if v["data"]["title"] == VIEW_TITLE
    ]
    assert len(views) == 1
    assert f"{label_studio.url}/projects/{project_id}/data?tab={views[0]['id']}" in captured.out
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    assert len(ranking) == 60 and ranking["rank"].tolist() == list(range(1, 61))
    flagged = set(ranking.loc[ranking["flagged"], "task_id"])
    assert len(flagged) == 6
    assert len(flagged & flipped) >= 3  # the planted flips rank at the top
    shown = get_json(label_studio, "/api/tasks/", view=views[0]["id"], project=project_id, page_size=100)
    assert {task["id"] for task in shown["tasks"]} == flagged  # the tab lists exactly the flagged tasks
    predictions = [
        p
        for p in get_json(label_studio, "/api/predictions/", project=project_id)
        if p["model_version"] == "relabel-self_influence"
    ]
    assert sorted(int(p["task"]) for p in predictions) == sorted(flagged)

    # Running it again duplicates nothing.
    assert main(["audit", "--project", str(project_id), "--top", "6", "--queue", "view"]) == 0
    capsys.readouterr()
    again = [
        p
        for p in get_json(label_studio, "/api/predictions/", project=project_id)
        if p["model_version"].startswith("relabel-")
    ]
    assert len(again) == 6
    views = [
        v
        for v in get_json(label_studio, "/api/dm/views/", project=project_id)
        if v["data"]["title"] == VIEW_TITLE
    ]
    assert len(views) == 1


def test_project_queue_sync_and_undo_through_the_cli(
    label_studio, monkeypatch, capsys, tmp_path: Path
) -> None:
    project_id, _ = _sentiment_project(label_studio, seed=11)
    key_file = tmp_path / "token"
    key_file.write_text(label_studio.legacy_token + "\n")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    common = ["--url", label_studio.url, "--project", str(project_id), "--api-key-file", str(key_file)]
    before = {task["id"]: task["annotations"] for task in export_tasks(label_studio, project_id)}

    assert main(["audit", *common, "--top-fraction", "0.1", "--queue", "project"]) == 0
    out = capsys.readouterr().out
    projects = get_json(label_studio, "/api/projects/", page_size=1000)["results"]
    (review,) = [p for p in projects if review_marker(project_id) in (p.get("description") or "")]
    assert f"{label_studio.url}/projects/{review['id']}/data" in out
    review_tasks = sorted(export_tasks(label_studio, review["id"]), key=lambda task: task["id"])
    assert len(review_tasks) == 6
    first = review_tasks[0]["data"]
    annotate(label_studio, review_tasks[0]["id"], choice_result(first["relabel_suggested"]))

    assert main(["sync", *common]) == 0
    assert "1 tasks reviewed" in capsys.readouterr().out
    assert main(["sync", *common]) == 0
    assert "0 new annotations" in capsys.readouterr().out

    assert main(["undo", *common]) == 0
    capsys.readouterr()
    after = {task["id"]: task["annotations"] for task in export_tasks(label_studio, project_id)}
    for task_id, original in before.items():
        assert after[task_id][: len(original)] == original
    assert (
        sum(len(a) for a in after.values()) == sum(len(a) for a in before.values()) + 1
    )  # the synced decision
    projects = get_json(label_studio, "/api/projects/", page_size=1000)["results"]
    assert all(review_marker(project_id) not in (p.get("description") or "") for p in projects)


def _assert_one_clear_line(code: int, captured: Any, secret: str, *fragments: str) -> None:
    assert code == 2
    assert secret not in captured.out and secret not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("relabel: error:")
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0]


def test_wrong_token_is_one_clear_line_without_the_token(label_studio, monkeypatch, capsys) -> None:
    project_id, _ = _sentiment_project(label_studio, n_tasks=10, n_flipped=1)
    wrong = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", wrong)
    code = main(["audit", "--url", label_studio.url, "--project", str(project_id)])
    _assert_one_clear_line(code, capsys.readouterr(), wrong, "rejected the API token")


def test_unreachable_server_is_one_clear_line_without_the_token(monkeypatch, capsys) -> None:
    secret = "fedcba9876543210fedcba9876543210fedcba98"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", secret)
    url = f"http://127.0.0.1:{find_free_port()}"
    code = main(["audit", "--url", url, "--project", "1"])
    _assert_one_clear_line(code, capsys.readouterr(), secret, "Could not reach Label Studio")


def test_unknown_project_and_missing_token_are_clear_errors(label_studio, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.legacy_token)
    code = main(["audit", "--url", label_studio.url, "--project", "987654"])
    _assert_one_clear_line(code, capsys.readouterr(), label_studio.legacy_token, "987654")

    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    code = main(["undo", "--url", label_studio.url, "--project", "1"])
    _assert_one_clear_line(code, capsys.readouterr(), label_studio.legacy_token, "LABEL_STUDIO_API_KEY")


@pytest.mark.parametrize("command", ["audit", "sync", "undo"])
def test_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "LABEL_STUDIO_API_KEY" in out


class _Terminal(io.StringIO):
    """Standard input that says it is a terminal (so `relabel accept` asks) and answers ``text``."""

    def isatty(self) -> bool:
        return True


def _run_json(capsys: Any, argv: list[str], code: int = 0) -> dict[str, Any]:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1, captured.out + captured.err
    return json.loads(lines[0])


def test_accept_dry_run_decline_and_accept_through_the_cli(
    label_studio, monkeypatch, capsys, tmp_path
) -> None:
    """`accept --dry-run` counts per tier what `accept` then accepts and writes nothing; declining the prompt
    says "nothing accepted" and writes nothing; an error under --json is one JSON object."""
    project_id, _ = _sentiment_project(label_studio, seed=5)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.legacy_token)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    common = ["--project", str(project_id)]
    audit = _run_json(capsys, ["audit", *common, "--top", "8", "--json", "--quiet"])
    review_id = audit["push"]["review_project_id"]

    def state() -> tuple[list[int], int]:
        source = export_tasks(label_studio, project_id)
        return sorted(t["id"] for t in export_tasks(label_studio, review_id)), sum(
            len(t["annotations"]) for t in source
        )

    before = state()
    preview = _run_json(capsys, ["accept", *common, "--dry-run", "--json"])
    assert preview["dry_run"] is True and preview["review_project_id"] == review_id
    counts = {tier: len(items) for tier, items in preview["tiers"].items()}
    assert counts == {tier: audit["triage"]["tiers"][tier] for tier in TIERS} and sum(counts.values()) == 8
    tier = max(counts, key=counts.get)
    assert main(["accept", *common, "--dry-run", "--tier", tier]) == 0
    text = capsys.readouterr().out
    assert text.startswith("dry run: nothing written.")
    assert f"  {tier}: {counts[tier]} would be accepted" in text
    for item in preview["tiers"][tier]:
        assert f"  {item['source_task']}  {item['current']} → {item['suggested']}" in text
    assert state() == before

    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    assert main(["accept", *common, "--tier", tier]) == 0
    captured = capsys.readouterr()
    assert f"Accept the model's suggestion for {counts[tier]} tasks" in captured.err  # the prompt
    assert captured.out.startswith("nothing accepted:") and "accepted the model's" not in captured.out
    assert state() == before

    accepted = _run_json(capsys, ["accept", *common, "--tier", tier, "--yes", "--json"])
    assert sorted(accepted["accepted_task_ids"]) == sorted(i["source_task"] for i in preview["tiers"][tier])
    assert state()[1] == before[1] + counts[tier]
    again = _run_json(capsys, ["accept", *common, "--tier", tier, "--yes", "--json"])
    assert again["accepted_task_ids"] == [] and again["pending"] == 0

    error = _run_json(capsys, ["accept", "--project", "999999", "--dry-run", "--json"], code=2)
    assert (
        error == {"command": "accept", "error": error["error"], "exit_code": 2} and "999999" in error["error"]
    )


def test_sync_marks_the_report_stale_and_the_ledger_explains_itself(
    label_studio, monkeypatch, capsys, tmp_path
) -> None:
    """`sync --report DIR` records its time in the audit's report folder: explain --from warns, and the page
    (headless Chromium, reading the DOM) shows the stale warning; the ledger project says what it is."""
    from connectors.label_studio.ledger import LEDGER_TITLE, ledger_marker
    from relabel.report import SYNC_JSON

    project_id, _ = _sentiment_project(label_studio, seed=13)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.legacy_token)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    report = tmp_path / "report"
    common = ["--project", str(project_id)]
    audit = _run_json(capsys, ["audit", *common, "--top", "6", "--report", str(report), "--json", "--quiet"])
    item = audit["flagged_task_ids"][0]
    assert main(["explain", "--from", str(report), "--item", str(item)]) == 0
    assert "older than the last `relabel sync`" not in capsys.readouterr().out

    review_tasks = export_tasks(label_studio, audit["push"]["review_project_id"])
    annotate(label_studio, review_tasks[0]["id"], choice_result(review_tasks[0]["data"]["relabel_suggested"]))
    time.sleep(1.1)  # the times are recorded to the second
    synced = _run_json(capsys, ["sync", *common, "--report", str(report), "--json"])
    assert synced["reviewed"] == 1 and synced["report_error"] is None
    recorded = json.loads((report / SYNC_JSON).read_text())
    assert recorded["source_project_id"] == project_id and recorded["reviewed"] == 1
    assert (report / SYNC_JSON).stat().st_mode & 0o777 == 0o600
    assert main(["explain", "--from", str(report), "--item", str(item)]) == 0
    out = capsys.readouterr().out
    assert f"older than the last `relabel sync` ({recorded['synced_at']})" in out
    with Browser(width=1366, height=768) as browser:
        browser.goto((report / "report.html").resolve().as_uri())
        browser.wait_for_selector("#stale", visible=True)
        assert f"synced {recorded['synced_at'][:16].replace('T', ' ')} UTC" in browser.text("#stale")
        # the reviewed item carries the sync's "reviewed" mark; the others none
        marked = browser.evaluate(
            "[...document.querySelectorAll('#flagged tbody tr')].filter(r => r.querySelector("
            "'.review-mark.synced')).map(r => [+r.dataset.item, r.querySelector('.review-mark').textContent])"
        )
        assert marked == [[int(review_tasks[0]["data"]["relabel_source_task"]), "reviewed"]]
        banner_top = browser.evaluate("document.getElementById('stale').getBoundingClientRect().top")
        assert 0 <= banner_top < 768  # seen without scrolling
        browser.drain(0.3)
        assert not browser.errors, [str(error) for error in browser.errors]
    # a report of another project is refused before anything is synced
    other = tmp_path / "other"
    other.mkdir()
    for name in ("report.html", "audit.json"):
        text = (report / name).read_text().replace(f'"project_id": {project_id}', '"project_id": 424242')
        (other / name).write_text(text)
    refused = _run_json(capsys, ["sync", *common, "--report", str(other), "--json"], code=2)
    assert "is the report of project 424242" in refused["error"]

    projects = get_json(label_studio, "/api/projects/", page_size=1000)["results"]
    (ledger,) = [p for p in projects if ledger_marker(p["id"]) in (p.get("description") or "")]
    assert ledger["title"] == LEDGER_TITLE and len(LEDGER_TITLE) <= 50 and "undo" in ledger["title"]
    assert "Created by relabel" in ledger["description"]
    assert "If you delete this project, relabel forgets" in ledger["description"]


def test_a_ledger_under_the_old_title_is_still_found_and_renamed(label_studio) -> None:
    """Changing the title does not lose a ledger made before: the proof is the marker of its own id."""
    from connectors.label_studio.client import LabelStudioClient
    from connectors.label_studio.ledger import (
        LEDGER_DESCRIPTION,
        LEDGER_TITLE,
        OLD_LEDGER_DESCRIPTIONS,
        Ledger,
        ledger_marker,
    )

    client = LabelStudioClient(label_studio.url, label_studio.legacy_token)
    current = Ledger(client).project_id(create=True)
    assert current is not None
    # pose the current ledger as one an earlier version made
    client.update_project(
        current, title="relabel ledger", description=f"{OLD_LEDGER_DESCRIPTIONS[0]} {ledger_marker(current)}"
    )
    # a look-alike under the old title without its own marker is no ledger
    copy = client.create_project(
        title="relabel ledger", description=f"{OLD_LEDGER_DESCRIPTIONS[0]} {ledger_marker(current)}"
    )
    assert Ledger(client).project_id(create=False) == current
    found = {int(p["id"]): p for p in client.list_projects()}
    assert found[current]["title"] == LEDGER_TITLE
    assert found[current]["description"] == f"{LEDGER_DESCRIPTION} {ledger_marker(current)}"
    assert found[int(copy["id"])]["title"] == "relabel ledger"  # not relabel's: left as it is
    client.delete_project(int(copy["id"]))
