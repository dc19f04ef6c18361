"""Reviewer work is never lost, against a real Label Studio server: undo keeps what a person changed and
refuses while a review project holds drafts, skips or decisions not yet synced (``--force`` saves them to a
file first); a decision whose source task a person deleted is named once and blocks nothing; an audit or a
sync that waited for the write lease decides on what it reads under it."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.label_studio import LabelStudioConnector
from relabel.dataset import FlaggedItem
from relabel.errors import RelabelError
from relabel.nightly import EXIT_OK, run_nightly
from relabel.pipeline import run_audit
from relabel.settings import AuditSettings
from tests.label_studio_seeding import (
    annotate,
    choice_result,
    create_draft,
    export_tasks,
    get_json,
    touch_annotation,
)
from tests.test_audit_cli import _sentiment_project
from tests.test_review_queue import _items, _seed

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def connector(label_studio: Any) -> LabelStudioConnector:
    return LabelStudioConnector(label_studio.url, label_studio.legacy_token)


def _review_tasks(server: Any, review_id: int) -> list[dict[str, Any]]:
    return sorted(export_tasks(server, review_id), key=lambda task: task["id"])


def _project_ids(server: Any) -> set[int]:
    return {int(p["id"]) for p in get_json(server, "/api/projects/", page_size=1000)["results"]}


def _cli(server: Any, *arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABEL_STUDIO_API_KEY": server.legacy_token, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "relabel.cli", *arguments, "--url", server.url]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


def _delete_task(server: Any, task_id: int) -> None:
    response = requests.delete(
        f"{server.url}/api/tasks/{task_id}/",
        headers={"Authorization": f"Token {server.legacy_token}"},
        timeout=60,
    )
    assert response.status_code == 204, response.text[:300]


def test_drafts_and_skips_block_undo_and_force_saves_them_to_a_private_file_first(
    label_studio: Any, connector: LabelStudioConnector, tmp_path: Path
) -> None:
    project_id, task_ids = _seed(label_studio, n_tasks=12)
    pushed = connector.push(project_id, _items(task_ids, top=4), mode="project")
    review_id = int(pushed.review_project_id)
    first, second, *_ = _review_tasks(label_studio, review_id)

    draft_id = create_draft(label_studio, first["id"], choice_result("meh"))  # autosaved, not submitted
    with pytest.raises(RelabelError, match=r"holds 1 draft \("):
        connector.undo(project_id)
    skip_id = annotate(label_studio, second["id"], [], cancelled=True)
    with pytest.raises(RelabelError, match="holds 1 draft, 1 skipped task") as refused:
        connector.undo(project_id)
    assert "--force" in str(refused.value) and "\n" not in str(refused.value)
    assert review_id in _project_ids(label_studio)  # nothing was deleted
    assert len(_review_tasks(label_studio, review_id)) == 4

    refused_cli = _cli(label_studio, "undo", "--project", str(project_id), cwd=tmp_path)
    assert refused_cli.returncode == 2 and refused_cli.stdout == ""
    assert refused_cli.stderr.count("\n") == 1 and "1 draft, 1 skipped task" in refused_cli.stderr

    forced = _cli(label_studio, "undo", "--project", str(project_id), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    (backup,) = (tmp_path / "relabel-backups").iterdir()
    assert f"saved the review project's annotations and drafts first to {backup.relative_to(tmp_path)}" in (
        forced.stdout
    )
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    saved = json.loads(backup.read_text())
    assert saved["review_project"] == review_id and saved["source_project"] == project_id
    by_id = {task["id"]: task for task in saved["tasks"]}
    assert sorted(by_id) == [first["id"], second["id"]]
    assert [d["id"] for d in by_id[first["id"]]["drafts"]] == [draft_id]
    assert by_id[first["id"]]["drafts"][0]["result"] == choice_result("meh")
    assert [(a["id"], a["was_cancelled"]) for a in by_id[second["id"]]["annotations"]] == [(skip_id, True)]
    assert review_id not in _project_ids(label_studio)


def test_undo_keeps_accepted_annotations_a_person_edited_or_resaved(
    label_studio: Any, connector: LabelStudioConnector, tmp_path: Path
) -> None:
    project_id, task_ids = _seed(label_studio, n_tasks=12)
    items = [replace(item, tier="likely error") for item in _items(task_ids, top=5)]
    connector.push(project_id, items, mode="project")
    accepted = connector.accept(project_id, "likely error", lambda n: True)
    assert sorted(accepted.accepted_task_ids) == sorted(item.task_id for item in items)
    made = {
        int(task["id"]): a
        for task in export_tasks(label_studio, project_id)
        for a in task["annotations"]
        if a["result"] and str(a["result"][0].get("id", "")).startswith("relabel-accept-")
    }
    edited, resaved, *untouched = sorted(made)
    touch_annotation(label_studio, made[edited]["id"], choice_result("pos"))  # a reviewer's correction
    touch_annotation(label_studio, made[resaved]["id"], made[resaved]["result"])  # confirmed, same label
    keep = {t: a["id"] for t, a in made.items() if t in (edited, resaved)}
    before = {int(t["id"]): t["annotations"] for t in export_tasks(label_studio, project_id)}

    undone = _cli(label_studio, "undo", "--project", str(project_id), cwd=tmp_path)

    assert undone.returncode == 1, undone.stderr
    assert f"{len(untouched)} accepted suggestions removed" in undone.stdout
    (kept_line,) = [line for line in undone.stdout.splitlines() if line.startswith("kept ")]
    assert kept_line.startswith("kept 2 annotation(s) from `relabel accept` that a person edited or re-saved")
    for task in (edited, resaved):
        assert f"{label_studio.url}/projects/{project_id}/data?task={task}" in kept_line
    after = {int(t["id"]): t["annotations"] for t in export_tasks(label_studio, project_id)}
    for task, now in after.items():
        if task in untouched:
            assert [a["id"] for a in now] == [a["id"] for a in before[task] if a["id"] != made[task]["id"]]
        else:
            assert now == before[task]  # byte-identical, the person's edits included
    assert {a["id"] for t in (edited, resaved) for a in after[t]} >= set(keep.values())
    assert connector.ledger.entries(project_id, "accepted") == []  # what was kept is the person's now
    again = _cli(label_studio, "undo", "--project", str(project_id), cwd=tmp_path)
    assert again.returncode == 0 and "kept" not in again.stdout


def test_a_decision_on_a_deleted_source_task_is_named_once_and_blocks_nothing(
    label_studio: Any, connector: LabelStudioConnector
) -> None:
    project_id, task_ids = _seed(label_studio, n_tasks=12)
    items = _items(task_ids, top=3)
    pushed = connector.push(project_id, items, mode="project")
    first, second, _ = _review_tasks(label_studio, int(pushed.review_project_id))
    annotate(label_studio, first["id"], choice_result("neg"))
    annotate(label_studio, second["id"], choice_result("meh"))
    gone = int(first["data"]["relabel_source_task"])
    _delete_task(label_studio, gone)  # a person deletes the source task after it was decided

    synced = connector.sync(project_id)
    assert (synced.annotations_added, synced.source_gone_total) == (1, 1)
    assert synced.source_gone == [
        f"review task {first['id']} (source task {gone}): the source task was deleted, its decision cannot "
        "be copied"
    ]
    assert f"not copied: review task {first['id']} (source task {gone})" in synced.summary()
    again = connector.sync(project_id)  # no 404, and not named again
    assert (again.annotations_added, again.already_synced, again.source_gone, again.source_gone_total) == (
        0,
        1,
        [],
        1,
    )
    assert "not copied:" not in again.summary()

    undone = connector.undo(project_id)  # the decision that cannot be copied does not block undo
    assert undone.review_project_deleted == pushed.review_project_id
    assert undone.gone_decisions == [f"review task {first['id']} (source task {gone})"]
    assert connector.ledger.entries(project_id, "gone_source") == []


def _current_labels(connector: LabelStudioConnector, project_id: int) -> dict[int, str]:
    dataset = connector.pull(project_id)
    return {int(i): str(label) for i, label in zip(dataset.ids, dataset.labels, strict=True)}


def test_an_audit_that_pulled_before_accept_wrote_decides_on_what_it_reads_under_the_lease(
    label_studio: Any,
) -> None:
    project_id, _ = _sentiment_project(label_studio, n_tasks=40, n_flipped=6, seed=21)
    settings = AuditSettings(top=8, queue="project", features="tfidf")
    accepter = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    labels = _current_labels(accepter, project_id)
    flip = {"pos": "neg", "neg": "pos"}
    queued = [  # a queue whose suggestions change labels, so that accepting them changes the project
        FlaggedItem(task, rank, 1.0 / rank, flip[labels[task]], labels[task], 0.9, "likely error")
        for rank, task in enumerate(sorted(labels)[:6], start=1)
    ]
    accepter.push(project_id, queued, mode="project")
    review = accepter.review_project(project_id)
    tier = "likely error"
    before = _current_labels(accepter, project_id)

    auditor = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    pulled, outcome = threading.Event(), {}
    plain_pull = auditor.pull

    def pull_then_signal(*args: Any, **kwargs: Any) -> Any:
        dataset = plain_pull(*args, **kwargs)
        pulled.set()
        return dataset

    auditor.pull = pull_then_signal  # type: ignore[method-assign]

    def audit() -> None:
        outcome["result"] = run_audit(auditor, project_id, settings, progress=False)

    with accepter.lease(project_id, "accept"):  # accept holds the lease; the audit starts meanwhile
        thread = threading.Thread(target=audit)
        thread.start()
        assert pulled.wait(240)  # the audit has read the project before accept writes
        accepted = accepter.accept(project_id, tier, lambda n: True)
    thread.join(timeout=400)
    assert not thread.is_alive()
    assert accepted.accepted_task_ids
    after = _current_labels(accepter, project_id)
    assert all(before[t] != after[t] for t in accepted.accepted_task_ids)  # the first pull is stale now

    result = outcome["result"]
    assert result.reread and "pulled and ranked again under the write lease" in result.summary()
    shown = export_tasks(label_studio, int(review["id"]))
    for task in shown:  # no review task shows a label that is not the task's current one
        source = int(task["data"]["relabel_source_task"])
        if not task["annotations"]:
            assert task["data"]["relabel_current"] == after[source], source
    flagged = {int(t) for t in result.flagged_task_ids}
    read = zip(result.dataset.ids, result.dataset.labels, strict=True)
    assert {int(i): str(label) for i, label in read} == after
    assert flagged <= set(after)
    assert not run_audit(auditor, project_id, settings, progress=False).reread  # nothing changed: one pull


def test_accept_and_sync_started_together_revert_no_decision(label_studio: Any) -> None:
    project_id, task_ids = _seed(label_studio, n_tasks=12)
    first_connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    items = [replace(item, tier="review") for item in _items(task_ids, top=6)]
    pushed = first_connector.push(project_id, items, mode="project")
    decided = _review_tasks(label_studio, int(pushed.review_project_id))[:3]
    for task in decided:  # reviewers pick "meh" where the model suggested something else
        annotate(label_studio, task["id"], choice_result("meh"))
    connectors = [LabelStudioConnector(label_studio.url, label_studio.legacy_token) for _ in range(2)]
    outcome: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def accept() -> None:
        barrier.wait()
        outcome["accept"] = connectors[0].accept(project_id, "review", lambda n: True)

    def sync() -> None:
        barrier.wait()
        outcome["sync"] = connectors[1].sync(project_id)

    threads = [threading.Thread(target=accept), threading.Thread(target=sync)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert outcome["sync"].annotations_added == 3
    accepted = set(outcome["accept"].accepted_task_ids)
    decided_sources = {int(task["data"]["relabel_source_task"]) for task in decided}
    assert accepted == {item.task_id for item in items} - decided_sources
    labels = _current_labels(first_connector, project_id)
    suggested = {item.task_id: item.suggested for item in items}
    for source in decided_sources:
        assert labels[source] == "meh"  # the reviewer's decision, not reverted
    for source in accepted:
        assert labels[source] == suggested[source]


def test_the_nightly_run_decides_on_what_it_reads_under_the_lease(tmp_path: Path) -> None:
    """A person's label saved after the nightly run pulled (and before it took the lease) is what the review
    queue and the state show (in-memory server: the real-server case is the audit test above)."""
    from tests.test_pipeline_unit import CLASSES as UNIT_CLASSES
    from tests.test_pipeline_unit import choice, seeded

    client, project_id, task_ids, flipped = seeded()
    connector = LabelStudioConnector(client=client)
    config = tmp_path / "audit.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[defaults]\nurl = "{client.url}"\ntop = 6\nqueue = "project"\n'
        f'[[projects]]\nname = "unit"\nproject = {project_id}\n'
    )
    plain_pull, pulls, fixed = connector.pull, [], {}

    def pull_then_a_person_fixes_the_labels(*args: Any, **kwargs: Any) -> Any:
        dataset = plain_pull(*args, **kwargs)
        pulls.append(len(dataset))
        if not fixed:  # a reviewer corrects every planted error right after the first pull
            for task in sorted(flipped):
                truth = UNIT_CLASSES[task_ids.index(task) % 3]
                client.add_annotation(task, choice(truth))
                fixed[task] = truth
        return dataset

    connector.pull = pull_then_a_person_fixes_the_labels  # type: ignore[method-assign]
    stream = io.StringIO()
    assert run_nightly(config, stream=stream, connector_factory=lambda _: connector) == EXIT_OK, (
        stream.getvalue()
    )
    assert len(pulls) == 2  # pulled again under the lease
    review = connector.review_project(project_id)
    shown = {
        int(t["data"]["relabel_source_task"]): t["data"]["relabel_current"]
        for t in client.export_tasks(int(review["id"]))
    }
    assert shown and all(shown[task] == truth for task, truth in fixed.items() if task in shown)
    state = json.loads((tmp_path / "state" / "unit.state.json").read_text())
    for task, truth in fixed.items():
        assert state["items"].get(str(task), {"label": truth})["label"] == truth
