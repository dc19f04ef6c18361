"""The review queue against a real Label Studio server: push (view / project), re-run, sync, undo.

Every test seeds its own project on the session's server (fixture ``label_studio``), so they are independent.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import requests

from connectors.label_studio import LabelStudioConnector
from connectors.label_studio.push import ReviewQueue
from connectors.label_studio.queue_plan import (
    REVIEW_TITLE_SUFFIX,
    SUGGESTION_MODEL_VERSION,
    VIEW_TITLE,
    review_marker,
)
from relabel.dataset import FlaggedItem
from relabel.errors import RelabelError
from relabel.selection import normalised_suspicion
from tests.label_studio_seeding import (
    annotate,
    choice_result,
    create_draft,
    create_project,
    export_tasks,
    get_json,
    import_tasks,
    text_classification_config,
    text_tasks,
)

CLASSES = ["pos", "neg", "meh"]


def _seed(server: Any, n_tasks: int = 30, title: str = "queue test") -> tuple[int, list[int]]:
    """A text project with one annotation per task (labels cycle through CLASSES); returns (id, task ids)."""
    project_id = create_project(server, text_classification_config(CLASSES), title=title)
    labels = [CLASSES[i % len(CLASSES)] for i in range(n_tasks)]
    task_ids = import_tasks(server, project_id, text_tasks([f"text {i}" for i in range(n_tasks)], labels))
    return project_id, sorted(task_ids)


def _items(task_ids: list[int], top: int, seed: int = 0) -> list[FlaggedItem]:
    """Deterministic fake ranking: scores decrease with position; suggestions are the 'next' class."""
    scores = [float(len(task_ids) - position + seed) for position in range(len(task_ids))]
    current = [CLASSES[i % len(CLASSES)] for i in range(len(task_ids))]
    suggested = [CLASSES[(i + 1) % len(CLASSES)] for i in range(len(task_ids))]
    suspicion = normalised_suspicion(scores)
    return [
        FlaggedItem(task_ids[i], i + 1, float(suspicion[i]), suggested[i], current[i], 0.4 + i / 100)
        for i in range(top)
    ]


def _relabel_predictions(server: Any, project_id: int) -> list[dict[str, Any]]:
    predictions = get_json(server, "/api/predictions/", project=project_id)
    return [p for p in predictions if str(p["model_version"]).startswith("relabel-")]


def _relabel_views(server: Any, project_id: int) -> list[dict[str, Any]]:
    views = get_json(server, "/api/dm/views/", project=project_id)
    return [v for v in views if v["data"].get("title") == VIEW_TITLE]


def _annotations_by_task(server: Any, project_id: int) -> dict[int, str]:
    """Every task's annotations as canonical JSON text (the byte-identical comparison)."""
    return {
        int(task["id"]): json.dumps(task.get("annotations") or [], sort_keys=True)
        for task in export_tasks(server, project_id)
    }


@pytest.fixture
def connector(label_studio: Any) -> LabelStudioConnector:
    return LabelStudioConnector(label_studio.url, label_studio.legacy_token)


def test_normalised_suspicion_is_a_monotone_map_onto_unit_interval() -> None:
    values = normalised_suspicion([3.0, 10.0, -1.0, 3.0, float("nan")])
    assert values.tolist() == [0.5, 1.0, 0.25, 0.5, 0.0]


def test_view_push_creates_one_prediction_per_flagged_task_and_the_view(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    items = _items(task_ids, top=5)

    result = connector.push(project_id, items, method="self_influence")

    predictions = _relabel_predictions(label_studio, project_id)
    assert sorted(int(p["task"]) for p in predictions) == sorted(item.task_id for item in items)
    by_task = {int(p["task"]): p for p in predictions}
    for item in items:
        prediction = by_task[item.task_id]
        assert prediction["model_version"] == "relabel-self_influence"
        assert prediction["score"] == pytest.approx(item.score)  # the suspicion: the tab sorts by it
        assert prediction["mislabeling"] == pytest.approx(item.score)
        assert 0.0 <= prediction["score"] <= 1.0
        assert prediction["result"] == choice_result(item.suggested)
    assert items[0].score == pytest.approx(1.0)

    views = _relabel_views(label_studio, project_id)
    assert len(views) == 1 and result.view_created and result.view_id == views[0]["id"]
    assert views[0]["data"]["filters"] == {  # a filter the Data Manager front end accepts (no in_list)
        "conjunction": "and",
        "items": [
            {
                "filter": "filter:tasks:predictions_model_versions",
                "operator": "contains",
                "type": "List",
                "value": ["relabel-self_influence"],
            }
        ],
    }
    in_view = get_json(label_studio, "/api/tasks/", view=result.view_id, project=project_id, page_size=100)
    assert sorted(task["id"] for task in in_view["tasks"]) == sorted(item.task_id for item in items)
    assert result.url == f"{label_studio.url}/projects/{project_id}/data?tab={result.view_id}"


def test_view_rerun_duplicates_nothing_and_updates_in_place(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    foreign = requests.post(
        f"{label_studio.url}/api/projects/{project_id}/import/predictions",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        json=[
            {
                "task": task_ids[0],
                "result": choice_result("pos"),
                "score": 0.3,
                "model_version": "other-model",
            }
        ],
        timeout=60,
    )
    assert foreign.status_code == 201
    queue = connector
    first = queue.push(project_id, _items(task_ids, top=6))
    second = queue.push(project_id, _items(task_ids, top=6))
    assert (
        second.predictions_created == 0 and second.predictions_kept == 6 and second.predictions_deleted == 0
    )
    assert not second.view_created and second.view_id == first.view_id

    # A different ranking: some tasks leave the queue, others enter; still one prediction per flagged task.
    reordered = _items(list(reversed(task_ids)), top=4)
    third = queue.push(project_id, reordered)
    predictions = _relabel_predictions(label_studio, project_id)
    assert sorted(int(p["task"]) for p in predictions) == sorted(item.task_id for item in reordered)
    assert len(_relabel_views(label_studio, project_id)) == 1
    assert third.view_id == first.view_id
    in_view = get_json(label_studio, "/api/tasks/", view=first.view_id, project=project_id, page_size=100)
    assert sorted(task["id"] for task in in_view["tasks"]) == sorted(item.task_id for item in reordered)
    others = [
        p
        for p in get_json(label_studio, "/api/predictions/", project=project_id)
        if p["model_version"] == "other-model"
    ]
    assert len(others) == 1


def test_project_mode_builds_review_project_in_rank_order(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio, title="Sentiment batch")
    items = _items(task_ids, top=7)
    queue = connector

    result = queue.push(project_id, items, mode="project")

    review = get_json(label_studio, f"/api/projects/{result.review_project_id}/")
    assert review["title"] == "Sentiment batch" + REVIEW_TITLE_SUFFIX
    assert review_marker(project_id) in review["description"]
    assert review["sampling"] == "Sequential sampling"
    assert 'name="relabel_reasons"' in review["label_config"]  # tests/test_reviewer_view.py
    assert review["model_version"] == SUGGESTION_MODEL_VERSION  # pre-fills the labeling form
    tasks = sorted(export_tasks(label_studio, result.review_project_id), key=lambda task: task["id"])
    assert [task["data"]["relabel_rank"] for task in tasks] == list(range(1, 8))
    assert [task["data"]["relabel_source_task"] for task in tasks] == [item.task_id for item in items]
    review_predictions = {
        int(p["task"]): p
        for p in get_json(label_studio, "/api/predictions/", project=result.review_project_id)
    }
    assert len(review_predictions) == len(tasks)
    for task, item in zip(tasks, items, strict=True):
        assert task["data"]["relabel_suggested"] == item.suggested
        assert task["data"]["relabel_current"] == item.current
        assert task["data"]["relabel_score"] == pytest.approx(item.score)
        assert task["data"]["text"] == f"text {task_ids.index(item.task_id)}"
        assert task["annotations"] == []
        prediction = review_predictions[int(task["id"])]
        assert prediction["model_version"] == SUGGESTION_MODEL_VERSION
        assert prediction["result"] == choice_result(item.suggested)  # the suggestion, pre-filled
        assert prediction["score"] == pytest.approx(item.probability)
    assert result.url == f"{label_studio.url}/projects/{result.review_project_id}/data"

    # Same ranking again: nothing changes.
    again = queue.push(project_id, items, mode="project")
    assert again.review_project_id == result.review_project_id and not again.review_project_created
    assert again.review_tasks_created == 0 and again.review_tasks_kept == 7
    assert len(export_tasks(label_studio, result.review_project_id)) == 7

    # A reviewer annotates the first task and leaves a draft on the second; the queue then grows.
    annotate(label_studio, tasks[0]["id"], choice_result(items[0].suggested))
    create_draft(label_studio, tasks[1]["id"], choice_result(items[1].suggested))
    new_items = _items(task_ids, top=10)
    queue.push(project_id, new_items, mode="project")
    after = export_tasks(label_studio, result.review_project_id)
    sources = [task["data"]["relabel_source_task"] for task in after]
    assert sorted(sources) == sorted(item.task_id for item in new_items)  # each flagged task exactly once
    assert {task["id"] for task in tasks} <= {task["id"] for task in after}  # no task replaced
    appended = sorted((t for t in after if t["id"] > max(t["id"] for t in tasks)), key=lambda t: t["id"])
    assert [task["data"]["relabel_rank"] for task in appended] == [8, 9, 10]  # new items, in rank order
    projects = get_json(label_studio, "/api/projects/", page_size=1000)["results"]
    assert sum(review_marker(project_id) in (p.get("description") or "") for p in projects) == 1


def test_sync_adds_new_annotations_once_and_never_touches_old_ones(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    items = _items(task_ids, top=4)
    queue = connector
    pushed = queue.push(project_id, items, mode="project")
    before = _annotations_by_task(label_studio, project_id)
    review_tasks = sorted(export_tasks(label_studio, pushed.review_project_id), key=lambda task: task["id"])

    annotate(label_studio, review_tasks[0]["id"], choice_result(items[0].suggested))  # label changed
    annotate(label_studio, review_tasks[1]["id"], choice_result(items[1].current))  # label confirmed
    annotate(label_studio, review_tasks[2]["id"], [], cancelled=True)  # skipped: not a decision

    result = queue.sync(project_id)
    assert (result.reviewed, result.labels_changed, result.annotations_added, result.already_synced) == (
        2,
        1,
        2,
        0,
    )
    after = export_tasks(label_studio, project_id)
    for task in after:
        old = {a["id"]: json.dumps(a, sort_keys=True) for a in json.loads(before[int(task["id"])])}
        now = {a["id"]: json.dumps(a, sort_keys=True) for a in task["annotations"]}
        assert {annotation_id: now.get(annotation_id) for annotation_id in old} == old  # untouched
        new = [a for a in task["annotations"] if a["id"] not in old]
        if task["id"] == items[0].task_id:
            assert [a["result"][0]["value"]["choices"] for a in new] == [[items[0].suggested]]
        elif task["id"] == items[1].task_id:
            assert [a["result"][0]["value"]["choices"] for a in new] == [[items[1].current]]
        else:
            assert new == []

    again = queue.sync(project_id)
    assert (again.reviewed, again.annotations_added, again.already_synced) == (2, 0, 2)
    assert (
        sum(len(task["annotations"]) for task in export_tasks(label_studio, project_id)) == len(task_ids) + 2
    )


def test_undo_removes_all_of_relabel_and_leaves_annotations_byte_identical(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    annotate(label_studio, task_ids[3], choice_result("meh"))  # a second annotator on one task
    foreign = requests.post(
        f"{label_studio.url}/api/projects/{project_id}/import/predictions",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        json=[
            {
                "task": task_ids[1],
                "result": choice_result("neg"),
                "score": 0.9,
                "model_version": "other-model",
            }
        ],
        timeout=60,
    )
    assert foreign.status_code == 201
    before = _annotations_by_task(label_studio, project_id)
    queue = connector
    queue.push(project_id, _items(task_ids, top=5), method="self_influence")
    queue.push(project_id, _items(task_ids, top=5), method="loss")  # replaces the self_influence ones
    pushed = queue.push(project_id, _items(task_ids, top=5), mode="project")
    leftover = requests.post(  # named like relabel's, but relabel did not make it (not in its ledger)
        f"{label_studio.url}/api/projects/{project_id}/import/predictions",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        json=[
            {
                "task": task_ids[2],
                "result": choice_result("pos"),
                "score": 0.5,
                "model_version": "relabel-margin",
            }
        ],
        timeout=60,
    )
    assert leftover.status_code == 201

    # A reviewer decision not yet synced blocks undo (it would be lost with the review project) ...
    review_task = min(export_tasks(label_studio, pushed.review_project_id), key=lambda task: task["id"])
    annotate(label_studio, review_task["id"], choice_result("pos"))
    with pytest.raises(RelabelError, match="sync"):
        queue.undo(project_id)
    # ... until it is forced, which saves the reviewer's work to a file first.
    saved: list[tuple[int, list[dict[str, Any]]]] = []
    result = queue.undo(project_id, force=True, save_backup=lambda r, tasks: saved.append((r, tasks)) or "f")
    assert result.backups == ["f"] and [(r, [t["id"] for t in tasks]) for r, tasks in saved] == [
        (pushed.review_project_id, [review_task["id"]])
    ]

    assert result.review_project_deleted == pushed.review_project_id
    assert result.model_versions == ["relabel-loss"]
    assert result.predictions_deleted == 5
    assert result.views_deleted == 1
    # The look-alike is not provably relabel's: left alone, and named.
    assert [p["model_version"] for p in _relabel_predictions(label_studio, project_id)] == ["relabel-margin"]
    assert result.left_alone == [f"1 predictions with model_version 'relabel-margin' in project {project_id}"]
    assert _relabel_views(label_studio, project_id) == []
    projects = get_json(label_studio, "/api/projects/", page_size=1000)["results"]
    assert all(review_marker(project_id) not in (p.get("description") or "") for p in projects)
    others = [
        p
        for p in get_json(label_studio, "/api/predictions/", project=project_id)
        if p["model_version"] == "other-model"
    ]
    assert len(others) == 1
    assert _annotations_by_task(label_studio, project_id) == before

    # Undo twice is harmless.
    assert queue.undo(project_id).predictions_deleted == 0


def test_undo_after_sync_keeps_the_synced_decisions(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    queue = connector
    items = _items(task_ids, top=3)
    pushed = queue.push(project_id, items, mode="project")
    review_task = min(export_tasks(label_studio, pushed.review_project_id), key=lambda task: task["id"])
    annotate(label_studio, review_task["id"], choice_result(items[0].suggested))
    queue.sync(project_id)
    synced = _annotations_by_task(label_studio, project_id)

    result = queue.undo(project_id)  # everything synced: no force needed

    assert result.review_project_deleted == pushed.review_project_id
    assert _annotations_by_task(label_studio, project_id) == synced


def test_sync_without_review_project_is_a_clear_error(label_studio, connector) -> None:
    project_id, _ = _seed(label_studio, n_tasks=6)
    with pytest.raises(RelabelError, match="no relabel review project"):
        connector.sync(project_id)


def test_project_mode_reads_the_current_label_when_the_ranking_does_not_give_it(
    label_studio, connector
) -> None:
    project_id, task_ids = _seed(label_studio, n_tasks=9)
    items = [FlaggedItem(task_id=task_ids[4], rank=1, score=1.0, suggested="pos", current=None)]

    result = connector.push(project_id, items, mode="project")

    (task,) = export_tasks(label_studio, result.review_project_id)
    assert task["data"]["relabel_current"] == CLASSES[4 % len(CLASSES)]
    assert task["data"]["text"] == "text 4"


# ------------------------------------------------------------------ a stable queue; skipped items come back


def _review_tasks_by_source(server: Any, review_id: int) -> dict[int, dict[str, Any]]:
    return {int(t["data"]["relabel_source_task"]): t for t in export_tasks(server, review_id)}


def _with_tier(items: list[FlaggedItem], position: int, tier: str) -> list[FlaggedItem]:
    """``items`` with ``tier`` on the one at ``position`` (0-based)."""
    return [replace(item, tier=tier if index == position else None) for index, item in enumerate(items)]


def test_reaudit_after_accepting_one_item_keeps_the_other_task_ids_with_current_unique_ranks(
    label_studio, connector
) -> None:
    project_id, task_ids = _seed(label_studio)
    items = _with_tier(_items(task_ids, top=8), 2, "likely error")
    pushed = connector.push(project_id, items, mode="project")
    review_id = pushed.review_project_id
    before = _review_tasks_by_source(label_studio, review_id)
    accepted = connector.accept(project_id, "likely error", lambda n: True)
    assert accepted.accepted_task_ids == [items[2].task_id]

    # The next audit ranks the accepted item out; the items after it move up one rank, one new item enters.
    rest = [task_id for task_id in task_ids if task_id != items[2].task_id]
    again = connector.push(project_id, _items(rest, top=8), mode="project")

    after = _review_tasks_by_source(label_studio, review_id)
    for source, task in before.items():
        if source != items[2].task_id:
            assert after[source]["id"] == task["id"]  # same task, updated in place
    assert items[2].task_id not in after
    expected_rank = {task_id: position + 1 for position, task_id in enumerate(rest[:8])}
    assert {source: task["data"]["relabel_rank"] for source, task in after.items()} == expected_rank
    assert after[rest[3]]["data"]["relabel_rank"] == 4 and before[rest[3]]["data"]["relabel_rank"] == 5
    assert after[rest[3]]["data"]["relabel_note"] != before[rest[3]]["data"]["relabel_note"]
    ranks = [task["data"]["relabel_rank"] for task in after.values()]
    assert len(ranks) == len(set(ranks))
    (new_task,) = [task for source, task in after.items() if source not in before]
    assert new_task["id"] > max(task["id"] for task in before.values())  # appended
    assert (again.review_tasks_created, again.review_tasks_removed, again.review_tasks_updated) == (1, 0, 6)
    assert again.review_tasks_kept == 1  # rank 1: suspicion 1.0 before and after, nothing to write
    # The suggestion prediction follows the task's fields (one per task, updated, not duplicated).
    predictions = get_json(label_studio, "/api/predictions/", project=review_id)
    by_task = {int(p["task"]): p for p in predictions}
    assert len(predictions) == len(after)
    moved = after[rest[3]]
    moved_item = _items(rest, top=8)[3]
    assert by_task[moved["id"]]["result"] == choice_result(moved_item.suggested)
    assert by_task[moved["id"]]["score"] == pytest.approx(moved_item.probability)


def test_queue_size_change_is_announced_before_anything_changes(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    queue = ReviewQueue(connector.client, ledger=connector.ledger)
    queue.push(
        project_id, _items(task_ids, top=8), mode="project", basis="top_fraction=0.1 of 80 ranked items"
    )
    review = connector.review_project(project_id)
    seen: list[tuple[str, int]] = []
    queue.announce = lambda line: seen.append((line, len(export_tasks(label_studio, review["id"]))))

    result = queue.push(
        project_id, _items(task_ids, top=5), mode="project", basis="top_fraction=0.05 of 80 ranked items"
    )

    assert seen == [
        (
            f"relabel: the review queue of project {project_id} shrinks from 8 to 5 items: this run flags "
            "top_fraction=0.05 of 80 ranked items; the queue there was made with top_fraction=0.1 of 80 "
            "ranked items",
            8,  # announced while the queue still held its 8 tasks
        )
    ]
    assert result.size_change == seen[0][0]
    assert len(export_tasks(label_studio, review["id"])) == 5
    seen.clear()
    queue.push(project_id, _items(task_ids, top=5), mode="project", basis="top=5")
    assert seen == []  # same size: no line

    # The view queue says it too.
    queue.push(project_id, _items(task_ids, top=6), basis="top=6")
    queue.announce = lambda line: seen.append((line, len(_relabel_predictions(label_studio, project_id))))
    queue.push(project_id, _items(task_ids, top=9), basis="top=9")
    assert seen == [
        (
            f"relabel: the queue of view '{VIEW_TITLE}' in project {project_id} grows from 6 to 9 items: "
            "this run flags top=9; the queue there was made with top=6",
            6,
        )
    ]


def test_reaudit_never_deletes_a_task_holding_a_draft_or_a_skip(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    items = _items(task_ids, top=6)
    pushed = connector.push(project_id, items, mode="project")
    before = _review_tasks_by_source(label_studio, pushed.review_project_id)
    create_draft(label_studio, before[items[5].task_id]["id"], choice_result(items[5].current))
    annotate(label_studio, before[items[4].task_id]["id"], [], cancelled=True)

    result = connector.push(project_id, _items(task_ids, top=3), mode="project")  # items 4-6 leave

    after = _review_tasks_by_source(label_studio, pushed.review_project_id)
    assert items[3].task_id not in after  # untouched: deleted
    for item in items[4:]:  # reviewer work: the same task is still there, out of the ranked queue
        assert after[item.task_id]["id"] == before[item.task_id]["id"]
        assert after[item.task_id]["data"]["relabel_rank"] is None
        assert after[item.task_id]["data"]["relabel rank"] is None  # the readable column too
        assert after[item.task_id]["data"]["relabel_note"] == before[item.task_id]["data"]["relabel_note"]
    assert after[items[5].task_id]["drafts"][0]["result"] == choice_result(items[5].current)
    assert (result.review_tasks_removed, result.review_tasks_kept_with_work) == (1, 2)


def test_a_skipped_item_comes_back_to_its_reviewer_and_stays_in_the_queue(label_studio, connector) -> None:
    project_id, task_ids = _seed(label_studio)
    items = _items(task_ids, top=3)
    pushed = connector.push(project_id, items, mode="project")
    review_id = pushed.review_project_id
    assert get_json(label_studio, f"/api/projects/{review_id}/")["skip_queue"] == "REQUEUE_FOR_ME"
    tasks = _review_tasks_by_source(label_studio, review_id)
    skipped = tasks[items[0].task_id]["id"]
    annotate(label_studio, skipped, [], cancelled=True)  # the reviewer presses Skip on rank 1
    annotate(label_studio, tasks[items[1].task_id]["id"], choice_result(items[1].suggested))
    annotate(label_studio, tasks[items[2].task_id]["id"], choice_result(items[2].current))

    # Label Studio offers the skipped task to the same (only) reviewer again once the rest is done.
    assert get_json(label_studio, f"/api/projects/{review_id}/next/")["id"] == skipped

    synced = connector.sync(project_id)
    assert (synced.reviewed, synced.skipped, synced.pending) == (2, 1, 0)
    assert synced.review_states == {
        items[0].task_id: "skipped",
        items[1].task_id: "reviewed",
        items[2].task_id: "reviewed",
    }
    assert "2 tasks reviewed, 1 skipped" in synced.summary()

    again = connector.push(project_id, _items(task_ids, top=4), mode="project")  # the next audit
    assert (again.already_reviewed, again.skipped, again.pending) == (2, 1, 1)
    assert again.review_states[items[0].task_id] == "skipped"
    after = _review_tasks_by_source(label_studio, review_id)
    assert after[items[0].task_id]["id"] == skipped and after[items[0].task_id]["data"]["relabel_rank"] == 1
    assert [after[item.task_id]["data"]["relabel_rank"] for item in items[1:]] == [None, None]  # decided
    assert "2 reviewed, 1 skipped (back in the queue), 1 pending" in again.summary()

    # A skip setting a person chose later is theirs: relabel sets it once, never again.
    response = requests.patch(
        f"{label_studio.url}/api/projects/{review_id}/",
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        json={"skip_queue": "IGNORE_SKIPPED"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    connector.push(project_id, _items(task_ids, top=4), mode="project")
    assert get_json(label_studio, f"/api/projects/{review_id}/")["skip_queue"] == "IGNORE_SKIPPED"
