"""Trust against a real Label Studio: runs killed with SIGKILL mid-push, duplicated review projects, a team's
own ``relabel-…`` model, and two writers at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.label_studio import LabelStudioConnector
from relabel.errors import LockedError
from tests.label_studio_seeding import choice_result, export_tasks, get_json
from tests.test_audit_cli import _sentiment_project

REPO_ROOT = Path(__file__).resolve().parent.parent


def _relabel_state(server: Any, project_id: int) -> tuple[int, int, int]:
    """(relabel predictions, relabel tabs, relabel review projects) that exist for the project now."""
    predictions = [
        p
        for p in get_json(server, "/api/predictions/", project=project_id)
        if p["model_version"].startswith("relabel")
    ]
    views = [
        v
        for v in get_json(server, "/api/dm/views/", project=project_id)
        if "relabel" in v["data"].get("title", "")
    ]
    projects = get_json(server, "/api/projects/", page_size=1000)
    projects = projects["results"] if isinstance(projects, dict) else projects
    reviews = [p for p in projects if f"[relabel-review-of:{project_id}]" in (p.get("description") or "")]
    return len(predictions), len(views), len(reviews)


def _audit_command(server: Any, project_id: int, queue: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "relabel.cli",
        "audit",
        "--url",
        server.url,
        "--project",
        str(project_id),
        "--top",
        "6",
        "--queue",
        queue,
        "--quiet",
    ]


@pytest.mark.parametrize("queue", ["view", "project"])
def test_audits_killed_at_random_points_then_rerun_and_undo_leave_one_queue_then_nothing(
    label_studio: Any, queue: str
) -> None:
    project_id, _ = _sentiment_project(label_studio, n_tasks=40, seed=11)
    annotations_before = {t["id"]: t["annotations"] for t in export_tasks(label_studio, project_id)}
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.legacy_token, "PYTHONPATH": str(REPO_ROOT)}
    command = _audit_command(label_studio, project_id, queue)
    started = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, capture_output=True, timeout=600
    )  # how long a whole run takes
    whole = time.perf_counter() - started
    rng = random.Random(3)
    for _ in range(4):  # kill later runs at random moments: the push is the last part of a run
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5 * whole, 1.0 * whole))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _relabel_state(label_studio, project_id) == ((6, 1, 0) if queue == "view" else (0, 0, 1))
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    connector.undo(project_id, force=True)
    assert _relabel_state(label_studio, project_id) == (0, 0, 0)
    after = {t["id"]: t["annotations"] for t in export_tasks(label_studio, project_id)}
    assert after == annotations_before


def test_a_duplicated_review_project_and_a_teams_relabel_model_are_left_alone(label_studio: Any) -> None:
    project_id, _ = _sentiment_project(label_studio, n_tasks=30, seed=5)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    connector.push(project_id, [], mode="project")  # creates relabel's (empty) review project
    review = connector.review_project(project_id)
    copy = connector.client.create_project(
        title="Team project", description=review["description"], label_config=review["label_config"]
    )
    task = export_tasks(label_studio, project_id)[0]
    connector.client.import_tasks(
        int(copy["id"]),
        [
            {
                "data": {**task["data"], "relabel_note": "copied", "relabel_reasons": "copied"},
                "annotations": [{"result": choice_result("pos")}],
            }
        ],
    )
    connector.client.import_predictions(
        project_id,
        [
            {
                "task": task["id"],
                "model_version": "relabel-classifier",
                "score": 0.7,
                "result": choice_result("neg"),
            }
        ],
    )
    undone = connector.undo(project_id)
    assert undone.review_project_deleted == int(review["id"])
    assert connector.client.get_project(int(copy["id"]))["title"] == "Team project"
    assert len(connector.client.export_tasks(int(copy["id"]))) == 1
    versions = [p["model_version"] for p in connector.client.list_predictions(project_id)]
    assert versions == ["relabel-classifier"]
    assert len(undone.left_alone) == 2


def test_two_writers_at_once_make_one_queue(label_studio: Any) -> None:
    project_id, _ = _sentiment_project(label_studio, n_tasks=30, seed=9)
    first = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    second = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    second.lease_wait_seconds = 0
    with first.lease(project_id, "first writer"), pytest.raises(LockedError, match="first writer"):
        second.undo(project_id)
    tasks = sorted(t["id"] for t in export_tasks(label_studio, project_id))
    from relabel.dataset import FlaggedItem

    items = [FlaggedItem(task_id, rank, 1.0, "pos", "neg") for rank, task_id in enumerate(tasks[:4], start=1)]
    errors: list[BaseException] = []

    def push(connector: LabelStudioConnector) -> None:
        try:
            connector.push(project_id, items, mode="project")
        except BaseException as error:
            errors.append(error)

    first.lease_wait_seconds = second.lease_wait_seconds = 120
    threads = [threading.Thread(target=push, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert _relabel_state(label_studio, project_id) == (0, 0, 1)
    review = first.review_project(project_id)
    assert len(first.client.export_tasks(int(review["id"]))) == 4
