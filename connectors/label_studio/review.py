"""After the review: copy reviewers' decisions back (sync), read them (reviewed labels), remove relabel's
additions (undo).

``sync`` copies each reviewed task's decision (the reviewer's newest counting annotation, see
:mod:`connectors.label_studio.annotations`) to the source task as a NEW annotation, ``completed_by`` the
reviewer, whose single region carries the id ``relabel-sync-<review annotation id>``: that id is how a
re-sync knows a decision is already there, and how :func:`reviewed_labels` finds decisions later.

``undo`` deletes the predictions, views and review projects that relabel's ledger records as its own
(:mod:`connectors.label_studio.ledger`), and nothing else; look-alikes (a copied review project, a team's
own ``relabel-…`` model) are named, not touched. It refuses to delete a review project
holding reviewer decisions that were not synced yet (``force=True`` overrides).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import connectors.label_studio.queue_plan as plan
from connectors.label_studio.annotations import counting_annotations, newest_label
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from connectors.label_studio.ledger import Ledger
from connectors.label_studio.owned import OwnedPredictions, lookalikes, owned_review_project, owned_view
from connectors.label_studio.push import run_each
from connectors.label_studio.queue_plan import AcceptPreview, AcceptResult, SyncResult, UndoResult
from relabel.errors import ConnectorError, RelabelError


def _target(client: LabelStudioClient, project_id: int, control: str | None) -> ClassificationTarget:
    project = client.get_project(project_id)
    return parse_labeling_config(str(project.get("label_config") or "")).classification_target(control)


def _review_project_or_fail(client: LabelStudioClient, ledger: Ledger, source_project_id: int) -> int:
    """The id of relabel's review project of ``source_project_id`` (from the ledger)."""
    review, _ = owned_review_project(client, ledger, source_project_id)
    if review is None:
        raise RelabelError(
            f"project {source_project_id} has no relabel review project; run "
            f"`relabel audit --queue project --project {source_project_id}` first"
        )
    return int(review.data["object_id"])


def _sync_ids(task: dict[str, Any]) -> set[str]:
    """The ``relabel-sync-…`` region ids among a task's annotations."""
    return {
        str(region.get("id") or "")
        for annotation in task.get("annotations") or []
        for region in annotation.get("result") or []
        if str(region.get("id") or "").startswith(plan.SYNC_REGION_PREFIX)
    }


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on one flagged task: source task, the review annotation, the label chosen,
    and the review task's relabel fields (``relabel_current``, ``relabel_suggested``...)."""

    source_task: int
    annotation: dict[str, Any]
    label: str
    data: dict[str, Any]

    @property
    def region_id(self) -> str:
        return f"{plan.SYNC_REGION_PREFIX}{self.annotation['id']}"


def review_decisions(review_tasks: Sequence[dict[str, Any]], target: ClassificationTarget) -> list[Decision]:
    """The decision of every review task a reviewer answered (newest counting annotation with a label)."""
    decisions = []
    for task in review_tasks:
        data = task.get("data") or {}
        annotations = counting_annotations(task)
        if data.get("relabel_source_task") is None or not annotations:
            continue
        label = newest_label(annotations[-1:], target)
        if label is not None:
            decisions.append(Decision(int(data["relabel_source_task"]), annotations[-1], label, data))
    return decisions


def sync(
    client: LabelStudioClient,
    ledger: Ledger,
    source_project_id: int,
    *,
    control: str | None = None,
    progress: bool = False,
) -> SyncResult:
    """Copy reviewers' decisions from the review project to the source project as new annotations.

    Existing annotations are never changed; a decision already copied is not added again.
    """
    source_project_id = int(source_project_id)
    review_id = _review_project_or_fail(client, ledger, source_project_id)
    result = SyncResult(source_project_id=source_project_id, review_project_id=review_id)
    target = _target(client, source_project_id, control)
    decisions: list[Decision] = []
    for task in client.export_tasks(review_id):
        decided = review_decisions([task], target)
        decisions += decided
        source = (task.get("data") or {}).get("relabel_source_task")
        if source is not None and int(source) not in result.review_states:
            result.review_states[int(source)] = plan.REVIEWED if decided else plan.review_task_state(task)
    states = list(result.review_states.values())
    result.reviewed = len(decisions)
    result.skipped, result.pending = states.count(plan.SKIPPED), states.count(plan.PENDING)
    result.labels_changed = sum(1 for d in decisions if d.label != d.data.get("relabel_current"))
    result.agreed_with_suggestion = sum(1 for d in decisions if d.label == d.data.get("relabel_suggested"))
    source_ids = sorted({d.source_task for d in decisions})
    synced: set[str] = set()
    for task in client.export_tasks(source_project_id, source_ids):
        synced |= _sync_ids(task)
    to_add = [d for d in decisions if d.region_id not in synced]
    result.already_synced = len(decisions) - len(to_add)

    def add(decision: Decision) -> int:
        reviewer = decision.annotation.get("completed_by")
        if isinstance(reviewer, dict):
            reviewer = reviewer.get("id")
        client.create_annotation(
            decision.source_task,
            target.result(decision.label, region_id=decision.region_id),
            None if reviewer is None else int(reviewer),
        )
        return decision.source_task

    result.added_task_ids = run_each(add, to_add, "sync decisions", progress, plan.PARALLEL_REQUESTS)
    result.annotations_added = len(result.added_task_ids)
    return result


def unsynced_decisions(client: LabelStudioClient, source_project_id: int, review_id: int) -> int:
    """How many review tasks hold a counting annotation that was not copied to the source project."""
    reviewed: dict[int, set[str]] = {}
    for task in client.export_tasks(review_id):
        source = (task.get("data") or {}).get("relabel_source_task")
        regions = {f"{plan.SYNC_REGION_PREFIX}{a['id']}" for a in counting_annotations(task)}
        if source is not None and regions:
            reviewed.setdefault(int(source), set()).update(regions)
    if not reviewed:
        return 0
    synced: set[str] = set()
    for task in client.export_tasks(source_project_id, sorted(reviewed)):
        synced |= _sync_ids(task)
    return sum(1 for regions in reviewed.values() if not regions & synced)


def _untouched(task: dict[str, Any]) -> bool:
    """Whether nobody has touched a review task yet (no annotation, no draft)."""
    return not task.get("annotations") and not task.get("drafts")


def pending_in_tier(client: LabelStudioClient, review_id: int, tier: str) -> list[dict[str, Any]]:
    """The review tasks of ``tier`` that nobody has touched yet (no annotation, no draft)."""
    return [
        task
        for task in client.export_tasks(review_id)
        if (task.get("data") or {}).get("relabel_tier") == tier and _untouched(task)
    ]


def accept_preview(
    client: LabelStudioClient, ledger: Ledger, source_project_id: int, tiers: Sequence[str]
) -> AcceptPreview:
    """What :func:`accept` would accept for each of ``tiers`` (the untouched review tasks, in rank order:
    source task, current and suggested label). Reads only; writes nothing, takes no lease."""
    review_id = _review_project_or_fail(client, ledger, source_project_id)
    preview = AcceptPreview(int(source_project_id), review_id, {tier: [] for tier in tiers})
    for task in client.export_tasks(review_id):
        data = task.get("data") or {}
        if data.get("relabel_tier") in preview.tiers and _untouched(task):
            preview.tiers[data["relabel_tier"]].append(
                {
                    "review_task": int(task["id"]),
                    "source_task": data.get("relabel_source_task"),
                    "rank": data.get("relabel_rank"),
                    "current": data.get("relabel_current"),
                    "suggested": data.get("relabel_suggested"),
                }
            )
    for items in preview.tiers.values():
        items.sort(key=lambda item: (item["rank"] is None, item["rank"] or 0, item["review_task"]))
    return preview


def accept(
    client: LabelStudioClient,
    ledger: Ledger,
    source_project_id: int,
    tier: str,
    confirm: Callable[[int], bool],
    *,
    control: str | None = None,
) -> AcceptResult:
    """Accept the model's suggestion for every untouched review task of ``tier``: each becomes a NEW
    annotation on its source task whose region id is ``relabel-accept-<review task id>``, recorded in the
    ledger (so ``undo`` removes exactly these), and the review task leaves the queue. Nothing happens unless
    ``confirm(number of tasks)`` returns True. Existing annotations are never changed."""
    review_id = _review_project_or_fail(client, ledger, source_project_id)
    tasks = pending_in_tier(client, review_id, tier)
    result = AcceptResult(int(source_project_id), review_id, tier, pending=len(tasks))
    if not tasks:
        return result
    if not confirm(len(tasks)):
        result.declined = True
        return result
    target = _target(client, source_project_id, control)
    entry = ledger.add(source_project_id, "accepted", annotation_ids=[])
    for task in tasks:
        data = task["data"]
        region = f"{plan.ACCEPT_REGION_PREFIX}{task['id']}"
        made = client.create_annotation(
            int(data["relabel_source_task"]), target.result(data["relabel_suggested"], region_id=region), None
        )
        entry.data["annotation_ids"].append(int(made["id"]))
        ledger.save(entry)  # recorded one by one: a run killed here leaves nothing unrecorded behind
        result.accepted_task_ids.append(int(data["relabel_source_task"]))
    client.delete_tasks(review_id, [int(task["id"]) for task in tasks])
    return result


def _undo_accepted(client: LabelStudioClient, ledger: Ledger, project_id: int) -> int:
    """Delete the annotations ``accept`` recorded for the project; returns how many."""
    deleted = 0
    for entry in ledger.entries(project_id, "accepted"):
        for annotation_id in entry.data.get("annotation_ids") or []:
            try:
                client.delete_annotation(int(annotation_id))
                deleted += 1
            except ConnectorError:  # already gone (deleted by hand)
                pass
        ledger.remove(entry)
    return deleted


def undo(client: LabelStudioClient, ledger: Ledger, project_id: int, *, force: bool = False) -> UndoResult:
    """Remove what relabel's ledger records for ``project_id`` (predictions, views, review projects);
    nothing else. Look-alikes that are not recorded are named in ``UndoResult.left_alone``.

    Refuses (RelabelError) to delete a review project holding reviewer decisions not yet synced to the
    source project, unless ``force`` (which never widens what counts as relabel's).
    """
    project_id = int(project_id)
    result = UndoResult(project_id=project_id)
    client.get_project(project_id)  # clear error for an unknown project
    review, extra_reviews = owned_review_project(client, ledger, project_id)
    reviews = [entry for entry in (review, *extra_reviews) if entry is not None]
    if not force:
        for entry in reviews:
            unsynced = unsynced_decisions(client, project_id, int(entry.data["object_id"]))
            if unsynced:
                raise RelabelError(
                    f"review project {entry.data['object_id']} holds {unsynced} reviewer decisions not yet "
                    f"copied to project {project_id}; run `relabel sync --project {project_id}` first "
                    "(or undo with --force)"
                )
    owned_ids = _undo_predictions(client, ledger, project_id, result)
    result.accepted_annotations_deleted = _undo_accepted(client, ledger, project_id)
    view, extra_views = owned_view(client, ledger, project_id)
    views = [entry for entry in (view, *extra_views) if entry is not None]
    for entry in views:
        client.delete_view(int(entry.data["object_id"]))
        ledger.remove(entry)
        result.views_deleted += 1
    for entry in reviews:
        client.delete_project(int(entry.data["object_id"]))
        ledger.remove(entry)
        result.review_project_deleted = int(entry.data["object_id"])
    result.left_alone = lookalikes(
        client,
        project_id,
        {int(e.data["object_id"]) for e in reviews},
        {int(e.data["object_id"]) for e in views},
        owned_ids,
    )
    return result


def _undo_predictions(
    client: LabelStudioClient, ledger: Ledger, project_id: int, result: UndoResult
) -> set[int]:
    """Delete relabel's recorded predictions (a whole model_version in one request when all of it is
    relabel's); returns their ids."""
    owned = OwnedPredictions(client, ledger, project_id)
    mine = owned.current()
    whole = owned.whole_versions()
    by_version: dict[str, list[int]] = {}
    for prediction in mine:
        by_version.setdefault(str(prediction["model_version"]), []).append(int(prediction["id"]))
    for version, ids in sorted(by_version.items()):
        if version in whole:
            result.predictions_deleted += client.delete_model_version(project_id, version)
        else:
            run_each(client.delete_prediction, ids, "remove predictions", False, plan.PARALLEL_REQUESTS)
            result.predictions_deleted += len(ids)
        result.model_versions.append(version)
    owned.remove_record()
    return {int(prediction["id"]) for prediction in mine}


def reviewed_labels(
    client: LabelStudioClient, project_id: int, control: str | None = None
) -> dict[int, tuple[str, str]]:
    """task id → (label before the review, reviewer's label) for every task holding a decision recorded by
    :func:`sync`: before = the newest counting annotation that is not a sync decision, after = the newest
    sync decision."""
    target = _target(client, project_id, control)
    found: dict[int, tuple[str, str]] = {}
    for task in client.export_tasks(project_id):
        annotations = counting_annotations(task)
        decisions = [a for a in annotations if _sync_ids({"annotations": [a]})]
        originals = [a for a in annotations if a not in decisions]
        if not decisions or not originals:
            continue
        before, after = newest_label(originals, target), newest_label(decisions, target)
        if before is not None and after is not None:
            found[int(task["id"])] = (before, after)
    return found
