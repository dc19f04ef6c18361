"""The nightly audit against a real Label Studio server (fixture ``label_studio``).

Twice in a row pushes nothing new; a reviewed item is not flagged again (until its label changes); an
overlapping run exits with the lock message; one failing project does not stop the others.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from connectors.label_studio import LabelStudioConnector
from relabel.errors import InputError
from relabel.nightly import (
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PROJECT_FAILED,
    NightlyConfig,
    nightly_lock,
    run_nightly,
)
from tests.label_studio_seeding import (
    annotate,
    choice_result,
    create_project,
    export_tasks,
    import_tasks,
    text_classification_config,
    text_tasks,
    touch_annotation,
)

CLASSES = ["sports", "cooking", "travel"]
WORDS = {
    "sports": "goal match team score league referee",
    "cooking": "recipe oven flour bake sauce spoon",
    "travel": "flight hotel beach passport luggage tour",
}


def seed_project(server: Any, title: str, n_tasks: int = 60, n_flipped: int = 6) -> tuple[int, list[int]]:
    """A text project whose labels follow the vocabulary, with ``n_flipped`` wrong labels."""
    rng = np.random.default_rng(0)
    true_classes = [CLASSES[i % 3] for i in range(n_tasks)]
    texts = [
        " ".join(rng.choice(WORDS[label].split(), size=4)) + f" item{i}"
        for i, label in enumerate(true_classes)
    ]
    labels = list(true_classes)
    for i in range(n_flipped):
        labels[i * 7] = CLASSES[(CLASSES.index(labels[i * 7]) + 1) % 3]
    project_id = create_project(server, text_classification_config(CLASSES), title=title)
    task_ids = import_tasks(server, project_id, text_tasks(texts, labels))
    return project_id, sorted(task_ids)


def relabel_predictions(server: Any, project_id: int) -> list[dict[str, Any]]:
    response = requests.get(
        f"{server.url}/api/predictions/",
        params={"project": project_id},
        headers={"Authorization": f"Token {server.legacy_token}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:300]
    return [p for p in response.json() if str(p.get("model_version", "")).startswith("relabel")]


def write_config(tmp_path: Path, server: Any, projects: list[dict[str, Any]]) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(server.legacy_token + "\n")
    lines = [
        f'state_dir = "{tmp_path / "state"}"',
        f'log_file = "{tmp_path / "nightly.log"}"',
        "[defaults]",
        f'url = "{server.url}"',
        f'api_key_file = "{token_file}"',
        "top = 5",
        'queue = "view"',
        f'report_dir = "{tmp_path / "reports"}/{{name}}"',
    ]
    for project in projects:
        lines.append("[[projects]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in project.items()]
    path = tmp_path / "audit.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(config: Path, **options: Any) -> tuple[int, str]:
    stream = io.StringIO()
    code = run_nightly(config, stream=stream, **options)
    return code, stream.getvalue()


def state_items(tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    return json.loads((tmp_path / "state" / f"{name}.state.json").read_text())["items"]


def test_twice_in_a_row_pushes_nothing_new(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly twice")
    config = write_config(tmp_path, label_studio, [{"name": "twice", "project": project_id}])

    code, output = run(config)
    print(output)  # the log line, for a human reading `pytest -s`
    assert code == EXIT_OK, output
    assert output.count("\n") == 1 and "project=twice status=ok" in output and " new=5 " in output
    first = {p["id"]: p["task"] for p in relabel_predictions(label_studio, project_id)}
    assert len(first) == 5
    assert (tmp_path / "reports" / "twice" / "report.html").exists()

    code, output = run(config)  # nothing changed: nothing fitted, nothing pushed
    assert code == EXIT_OK, output
    assert "status=unchanged" in output and "new=0" in output
    assert {p["id"]: p["task"] for p in relabel_predictions(label_studio, project_id)} == first

    code, output = run(config)  # the server says no task changed: not even pulled
    assert code == EXIT_OK, output
    assert "status=unchanged" in output and "not pulled" in output

    code, output = run(config, force=True)  # re-ranked and re-pushed anyway: still nothing new
    assert code == EXIT_OK, output
    assert "status=ok" in output and " new=0 " in output and "pushed_new=0" in output
    assert {p["id"]: p["task"] for p in relabel_predictions(label_studio, project_id)} == first
    assert label_studio.legacy_token not in (tmp_path / "nightly.log").read_text()


def test_reviewed_item_is_not_flagged_again_until_its_label_changes(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly review")
    config = write_config(tmp_path, label_studio, [{"name": "review", "project": project_id}])
    code, output = run(config)
    assert code == EXIT_OK, output
    flagged = state_items(tmp_path, "review")
    top_task, entry = min(flagged.items(), key=lambda pair: pair[1]["rank"])
    assert entry["status"] == "flagged"

    # A reviewer opens the top item and confirms its (suspicious) label: the annotation is re-saved.
    touch_annotation(label_studio, entry["annotation_id"], choice_result(entry["label"]))
    code, output = run(config)
    assert code == EXIT_OK, output
    assert "reviewed_since_last_run=1" in output and "excluded_as_reviewed=1" in output
    items = state_items(tmp_path, "review")
    assert items[top_task]["status"] == "reviewed" and items[top_task]["reviewed_label"] == entry["label"]
    pushed_tasks = {p["task"] for p in relabel_predictions(label_studio, project_id)}
    assert int(top_task) not in pushed_tasks and len(pushed_tasks) == 5

    code, output = run(config, force=True)  # still reviewed, still not flagged
    assert int(top_task) not in {p["task"] for p in relabel_predictions(label_studio, project_id)}

    # Later someone changes that label: it is a new label, eligible again.
    other = next(label for label in CLASSES if label != entry["label"])
    touch_annotation(label_studio, entry["annotation_id"], choice_result(other))
    code, output = run(config)
    assert code == EXIT_OK, output
    items = state_items(tmp_path, "review")
    assert items.get(top_task, {}).get("status") != "reviewed"
    assert "excluded_as_reviewed=0" in output


def test_overlapping_run_exits_with_the_lock_message(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly lock")
    config = write_config(tmp_path, label_studio, [{"name": "locked", "project": project_id}])
    with nightly_lock(tmp_path / "state"):
        code, output = run(config)
    assert code == EXIT_LOCKED
    assert len(output.strip().splitlines()) == 1
    assert "another nightly audit is running" in output and "nightly.lock" in output
    assert relabel_predictions(label_studio, project_id) == []  # the second run pushed nothing
    code, output = run(config)  # the lock is free again
    assert code == EXIT_OK, output


def test_one_failing_project_does_not_stop_the_others(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly survivor")
    config = write_config(
        tmp_path,
        label_studio,
        [{"name": "missing", "project": 987654}, {"name": "survivor", "project": project_id}],
    )
    code, output = run(config)
    assert code == EXIT_PROJECT_FAILED
    lines = output.strip().splitlines()
    assert len(lines) == 2
    assert "project=missing status=failed reason=" in lines[0]
    assert "987654" in lines[0]
    assert "project=survivor status=ok" in lines[1]
    assert len(relabel_predictions(label_studio, project_id)) == 5
    assert label_studio.legacy_token not in output


def test_config_refuses_tokens_and_unknown_keys(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('state_dir = "s"\n[[projects]]\nurl = "http://x"\nproject = 1\napi_key = "secret"\n')
    with pytest.raises(InputError, match="keep the token out of the TOML"):
        NightlyConfig.load(path)
    path.write_text('state_dir = "s"\n[[projects]]\nurl = "http://x"\nproject = 1\ntopp = 3\n')
    with pytest.raises(InputError, match="unknown key"):
        NightlyConfig.load(path)
    code, output = run(path)
    assert code == 2 and "unknown key" in output
    path.write_text(
        'state_dir = "s"\n[defaults]\nmodel = "logistic"\n[[projects]]\nurl = "http://x"\nproject = 4\n'
    )
    config = NightlyConfig.load(path)
    assert config.state_dir == tmp_path / "s" and config.projects[0].name == "project-4"


def test_change_probe_sees_annotation_saves_but_tells_predictions_apart(label_studio) -> None:
    project_id, task_ids = seed_project(label_studio, "nightly probe", n_tasks=9, n_flipped=0)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    time.sleep(1.1)
    watermark, task_number = connector.server_clock(project_id)
    assert task_number == 9 and watermark is not None
    time.sleep(1.1)
    assert connector.tasks_changed_since(project_id, watermark) == []
    annotation = export_tasks(label_studio, project_id)[0]["annotations"][0]
    task_id = int(annotation["task"])
    touch_annotation(label_studio, int(annotation["id"]), choice_result(CLASSES[1]))
    assert connector.tasks_changed_since(project_id, watermark) == [task_id]
    assert connector.annotations_saved_since(project_id, watermark, [task_id])

    time.sleep(1.1)
    after_touch, _ = connector.server_clock(project_id)
    time.sleep(1.1)
    other = next(t for t in task_ids if t != task_id)
    response = requests.post(
        f"{label_studio.url}/api/predictions/",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        json={
            "task": other,
            "result": choice_result(CLASSES[2]),
            "score": 0.5,
            "model_version": "relabel-test",
        },
        timeout=120,
    )
    assert response.status_code < 300, response.text[:300]
    assert connector.tasks_changed_since(project_id, after_touch) == [other]  # a prediction bumps updated_at
    assert not connector.annotations_saved_since(project_id, after_touch, [other])  # but is no person's edit


def test_dry_run_pushes_nothing_and_leaves_the_state_alone(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly dry run")
    config = write_config(tmp_path, label_studio, [{"name": "dry", "project": project_id}])
    code, output = run(config, push=False)
    assert code == EXIT_OK, output
    assert "dry run: nothing pushed" in output
    assert relabel_predictions(label_studio, project_id) == []
    assert not (tmp_path / "state" / "dry.state.json").exists()
    assert (tmp_path / "reports" / "dry" / "report.html").exists()
    code, output = run(config)  # the real run afterwards is not mistaken for "unchanged"
    assert code == EXIT_OK, output
    assert " new=5 " in output and len(relabel_predictions(label_studio, project_id)) == 5


def test_a_skip_is_not_a_review(label_studio, tmp_path) -> None:
    project_id, _ = seed_project(label_studio, "nightly skip")
    config = write_config(
        tmp_path, label_studio, [{"name": "skip", "project": project_id, "queue": "project"}]
    )
    code, output = run(config)
    assert code == EXIT_OK, output
    flagged = sorted(state_items(tmp_path, "skip").items(), key=lambda pair: pair[1]["rank"])
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    review_id = int(connector.review_project(project_id)["id"])
    review_task = {int(t["data"]["relabel_source_task"]): t for t in export_tasks(label_studio, review_id)}
    first, second = int(flagged[0][0]), int(flagged[1][0])
    # Skip on the top item's review task, and Skip on the second item's own task in the source project.
    annotate(label_studio, review_task[first]["id"], [], cancelled=True)
    annotate(label_studio, second, [], cancelled=True)

    code, output = run(config, force=True)

    assert code == EXIT_OK, output
    assert "reviewed_since_last_run=0" in output and "excluded_as_reviewed=0" in output
    assert "queue_reviewed=0 queue_skipped=1 queue_pending=4" in output
    items = state_items(tmp_path, "skip")
    assert items[str(first)]["status"] == "flagged" and items[str(second)]["status"] == "flagged"
    after = {int(t["data"]["relabel_source_task"]): t for t in export_tasks(label_studio, review_id)}
    assert after[first]["id"] == review_task[first]["id"]  # still queued: the same task
    assert after[first]["data"]["relabel_rank"] is not None
    assert after[second]["id"] == review_task[second]["id"]
