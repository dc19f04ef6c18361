"""``relabel audit`` / ``sync`` / ``undo`` end to end through :func:`relabel.cli.main`, on a real server."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.label_studio.queue_plan import VIEW_TITLE, review_marker
from relabel.cli import main
from scripts.local_label_studio import find_free_port
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
