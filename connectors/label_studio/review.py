"""After the review: copy reviewers' decisions back (sync), read them (reviewed labels), remove relabel's
additions (undo).

``sync`` copies each reviewed task's decision (the reviewer's newest counting annotation, see
:mod:`connectors.label_studio.annotations`) to the source task as a NEW annotation, ``completed_by`` the
reviewer, whose single region carries the id ``relabel-sync-<review annotation id>``: that id is how a
re-sync knows a decision is already there, and how :func:`reviewed_labels` finds decisions later.

``undo`` deletes the predictions, views and review projects that relabel's ledger records as its own
(:mod:`connectors.label_studio.ledger`), and the annotations of ``relabel accept`` that are still exactly as
relabel wrote them (same result hash, same ``updated_at``, see :func:`owned.still_as_written`); nothing
else. An accepted annotation a person has since edited or re-saved is kept and named; look-alikes (a copied
review project, a team's own ``relabel-…`` model) are named, not touched.

Reviewer work blocks deletion: a review project holding decisions not yet synced, drafts or skipped tasks
is not deleted unless ``force=True``; then its annotations and drafts are first handed to ``save_backup``
(which writes them to a local file) so that nothing is lost even then. ``force`` never deletes an annotation
a person changed.

A decision whose source task was deleted (by a person) cannot be copied: ``sync`` names it once (review
task, source task), records it in the ledger (kind ``gone_source``) and goes on; it blocks neither later
syncs nor ``undo``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import connectors.label_studio.queue_plan as plan
from connectors.label_studio.annotations import counting_annotations, newest_label
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from connectors.label_studio.ledger import Ledger
from connectors.label_studio.owned import (
    OwnedPredictions,
    lookalikes,
    owned_review_project,
    owned_view,
    still_as_written,
    written_record,
)
from connectors.label_studio.push import run_each
from connectors.label_studio.queue_plan import AcceptPreview, AcceptResult, SyncResult, UndoResult
from relabel.errors import NotFoundError, RelabelError


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
    the review task's relabel fields (``relabel_current``, ``relabel_suggested``...) and its id."""

    source_task: int
    annotation: dict[str, Any]
    label: str
    data: dict[str, Any]
    review_task: int = 0

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
            decisions.append(
                Decision(int(data["relabel_source_task"]), annotations[-1], label, data, int(task["id"]))
            )
    return decisions


def _source_state(
    client: LabelStudioClient, source_project_id: int, source_ids: Sequence[int]
) -> tuple[set[int], set[str]]:
    """(the ids among ``source_ids`` that still exist in the source project, the ``relabel-sync-…`` region
    ids found on them)."""
    existing: set[int] = set()
    synced: set[str] = set()
    for task in client.export_tasks(source_project_id, sorted({int(i) for i in source_ids})):
        existing.add(int(task["id"]))
        synced |= _sync_ids(task)
    return existing, synced


def _gone_entry(ledger: Ledger, source_project_id: int) -> Any:
    """The ledger entry listing the decisions whose source task was deleted (created on first use)."""
    found = ledger.entries(source_project_id, "gone_source")
    if found:
        return found[0]
    return ledger.add(source_project_id, "gone_source", decisions={})


def _record_gone(ledger: Ledger, source_project_id: int, decisions: Sequence[Decision]) -> list[str]:
    """Record decisions whose source task is gone; returns the names of those not recorded before (each is
    reported once)."""
    if not decisions:
        return []
    entry = _gone_entry(ledger, source_project_id)
    known = entry.data.setdefault("decisions", {})
    new = [d for d in decisions if str(d.annotation["id"]) not in known]
    for decision in new:
        known[str(decision.annotation["id"])] = {
            "review_task": decision.review_task,
            "source_task": decision.source_task,
        }
    if new:
        ledger.save(entry)
    return [
        f"review task {d.review_task} (source task {d.source_task}): the source task was deleted, its "
        "decision cannot be copied"
        for d in new
    ]


def sync(
    client: LabelStudioClient,
    ledger: Ledger,
    source_project_id: int,
    *,
    control: str | None = None,
    progress: bool = False,
) -> SyncResult:
    """Copy reviewers' decisions from the review project to the source project as new annotations.

    Existing annotations are never changed; a decision already copied is not added again. A decision whose
    source task was deleted is named once (``SyncResult.source_gone``), recorded, and skipped.
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
    existing, synced = _source_state(client, source_project_id, [d.source_task for d in decisions])
    gone = [d for d in decisions if d.source_task not in existing]
    to_add = [d for d in decisions if d.source_task in existing and d.region_id not in synced]
    result.already_synced = len(decisions) - len(to_add) - len(gone)

    def add(decision: Decision) -> Decision | None:
        reviewer = decision.annotation.get("completed_by")
        if isinstance(reviewer, dict):
            reviewer = reviewer.get("id")
        try:
            client.create_annotation(
                decision.source_task,
                target.result(decision.label, region_id=decision.region_id),
                None if reviewer is None else int(reviewer),
            )
        except NotFoundError:  # deleted between the export and now
            return decision
        return None

    vanished = run_each(add, to_add, "sync decisions", progress, plan.PARALLEL_REQUESTS)
    gone += [d for d in vanished if d is not None]
    result.added_task_ids = [d.source_task for d, lost in zip(to_add, vanished, strict=True) if lost is None]
    result.annotations_added = len(result.added_task_ids)
    result.source_gone = _record_gone(ledger, source_project_id, gone)
    result.source_gone_total = len(gone)
    return result


@dataclass
class ReviewWork:
    """What people did in one review project that deleting it would lose.

    ``unsynced``: review tasks whose decision is not in the source project yet; ``drafts``: unsubmitted
    drafts; ``skipped``: tasks a reviewer skipped without deciding; ``gone``: decisions whose source task
    was deleted (review task, source task), which block nothing; ``tasks``: every review task holding an
    annotation or a draft, as exported (what a backup saves).
    """

    review_id: int
    unsynced: int = 0
    drafts: int = 0
    skipped: int = 0
    gone: list[tuple[int, int]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return bool(self.unsynced or self.drafts or self.skipped)

    def describe(self) -> str:
        """e.g. ``2 decisions not yet copied back, 1 draft, 1 skipped task``."""
        parts = [
            f"{count} {noun if count == 1 else plural}"
            for count, noun, plural in (
                (self.unsynced, "decision not yet copied back", "decisions not yet copied back"),
                (self.drafts, "draft", "drafts"),
                (self.skipped, "skipped task", "skipped tasks"),
            )
            if count
        ]
        return ", ".join(parts) or "no reviewer work"


def review_work(client: LabelStudioClient, source_project_id: int, review_id: int) -> ReviewWork:
    """The reviewer work in review project ``review_id`` (see :class:`ReviewWork`); work on a review task
    whose source task is gone does not count as blocking."""
    work = ReviewWork(int(review_id))
    work.tasks = [t for t in client.export_tasks(review_id) if t.get("annotations") or t.get("drafts")]
    sources = [(t.get("data") or {}).get("relabel_source_task") for t in work.tasks]
    existing, synced = _source_state(client, source_project_id, [int(s) for s in sources if s is not None])
    for task, source in zip(work.tasks, sources, strict=True):
        decided = counting_annotations(task)
        if source is not None and int(source) not in existing:
            work.gone += [(int(task["id"]), int(source))] if decided else []
            continue
        work.drafts += len(task.get("drafts") or [])
        if decided:
            regions = {f"{plan.SYNC_REGION_PREFIX}{a['id']}" for a in decided}
            work.unsynced += 0 if regions & synced else 1
        elif task.get("annotations"):
            work.skipped += 1
    return work


def unsynced_decisions(client: LabelStudioClient, source_project_id: int, review_id: int) -> int:
    """How many review tasks hold a decision that was not copied to the source project (decisions on
    deleted source tasks do not count: there is nothing to copy them to)."""
    return review_work(client, source_project_id, review_id).unsynced


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
    ledger with what relabel wrote (:func:`owned.written_record`: id, task, result hash, ``updated_at``),
    so that ``undo`` removes exactly these and only while nobody changed them; the review task leaves the
    queue. Nothing happens unless ``confirm(number of tasks)`` returns True. Existing annotations are never
    changed. The caller holds the project's write lease: the tasks are read under it."""
    review_id = _review_project_or_fail(client, ledger, source_project_id)
    tasks = pending_in_tier(client, review_id, tier)
    result = AcceptResult(int(source_project_id), review_id, tier, pending=len(tasks))
    if not tasks:
        return result
    if not confirm(len(tasks)):
        result.declined = True
        return result
    target = _target(client, source_project_id, control)
    entry = ledger.add(source_project_id, "accepted", annotation_ids=[], annotations=[])
    for task in tasks:
        data = task["data"]
        region = f"{plan.ACCEPT_REGION_PREFIX}{task['id']}"
        source = int(data["relabel_source_task"])
        made = client.create_annotation(
            source, target.result(data["relabel_suggested"], region_id=region), None
        )
        entry.data["annotation_ids"].append(int(made["id"]))
        entry.data["annotations"].append(written_record(made, source))
        ledger.save(entry)  # recorded one by one: a run killed here leaves nothing unrecorded behind
        result.accepted_task_ids.append(source)
    client.delete_tasks(review_id, [int(task["id"]) for task in tasks])
    return result


def _accepted_records(ledger: Ledger, project_id: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """(the ``accepted`` ledger entries of the project, every annotation record in them). An id recorded
    without what was written (a ledger from before relabel recorded content) has no hash: never deleted."""
    entries = ledger.entries(project_id, "accepted")
    records = []
    for entry in entries:
        described = {int(r["id"]): r for r in entry.data.get("annotations") or []}
        for annotation_id in entry.data.get("annotation_ids") or []:
            records.append(described.get(int(annotation_id), {"id": int(annotation_id), "task": None}))
    return entries, records


def _links(client: LabelStudioClient, project_id: int, task_ids: Sequence[int], limit: int = 10) -> str:
    """Links to tasks in the Label Studio web UI (the first ``limit``, then how many in all)."""
    base = client.browser_url(project_id)
    shown = ", ".join(f"{base}?task={int(task)}" for task in sorted(task_ids)[:limit])
    return shown + (f", … ({len(task_ids)} in all)" if len(task_ids) > limit else "")


def _undo_accepted(client: LabelStudioClient, ledger: Ledger, project_id: int, result: UndoResult) -> None:
    """Delete the annotations ``accept`` made that are still exactly as it wrote them; keep (and name) the
    ones a person changed; then forget all of them (what is kept is the person's now)."""
    entries, records = _accepted_records(ledger, project_id)
    task_ids = sorted({int(r["task"]) for r in records if r.get("task") is not None})
    current = {
        int(a["id"]): a
        for task in client.export_tasks(project_id, task_ids)
        for a in task.get("annotations") or []
    }
    changed: list[int] = []
    unrecorded = [int(r["id"]) for r in records if r.get("task") is None]
    for record in records:
        annotation = current.get(int(record["id"]))
        if record.get("task") is None or annotation is None:
            continue  # unrecorded content (kept, named below), or deleted by a person already
        if not still_as_written(record, annotation):
            changed.append(int(record["task"]))
            continue
        try:
            client.delete_annotation(int(record["id"]))
            result.accepted_annotations_deleted += 1
        except NotFoundError:  # deleted by a person just now
            pass
    for entry in entries:
        ledger.remove(entry)
    if changed:
        result.kept.append(
            f"kept {len(changed)} annotation(s) from `relabel accept` that a person edited or re-saved since "
            f"(now theirs): {_links(client, project_id, changed)}"
        )
    if unrecorded:
        result.kept.append(
            f"kept {len(unrecorded)} annotation(s) from `relabel accept` recorded without their content "
            f"(ids {', '.join(map(str, unrecorded[:10]))}): delete them by hand if nobody changed them"
        )


def _refuse_for_work(project_id: int, work: Sequence[ReviewWork], url: str) -> RelabelError:
    blocking = [w for w in work if w.blocks]
    described = "; ".join(f"review project {w.review_id} holds {w.describe()}" for w in blocking)
    return RelabelError(
        f"not undone: {described} ({url}); run `relabel sync --project {project_id}` to copy decisions, "
        "submit or discard drafts and skipped tasks in Label Studio, or run undo with --force, which first "
        "saves the review project's annotations and drafts to a local file"
    )


def undo(
    client: LabelStudioClient,
    ledger: Ledger,
    project_id: int,
    *,
    force: bool = False,
    save_backup: Callable[[int, list[dict[str, Any]]], str] | None = None,
) -> UndoResult:
    """Remove what relabel's ledger records for ``project_id`` (predictions, views, review projects) and the
    accepted annotations nobody changed; nothing else. Kept content and look-alikes are named in
    ``UndoResult.kept`` and ``UndoResult.left_alone``.

    Refuses (RelabelError, nothing deleted) while a review project holds reviewer work (decisions not yet
    synced, drafts, skipped tasks), unless ``force``; then ``save_backup(review project id, its tasks with
    annotations or drafts)`` writes them to a local file first and returns its path. ``force`` never
    widens what counts as relabel's and never deletes an annotation a person changed.
    """
    project_id = int(project_id)
    result = UndoResult(project_id=project_id)
    client.get_project(project_id)  # clear error for an unknown project
    review, extra_reviews = owned_review_project(client, ledger, project_id)
    reviews = [entry for entry in (review, *extra_reviews) if entry is not None]
    work = [review_work(client, project_id, int(entry.data["object_id"])) for entry in reviews]
    if any(w.blocks for w in work) and not force:
        raise _refuse_for_work(project_id, work, client.browser_url(work[0].review_id))
    for found in work:
        if force and found.blocks and save_backup is None:
            raise RelabelError(
                f"review project {found.review_id} holds {found.describe()}; undo --force needs somewhere "
                "to save it first (save_backup)"
            )
        if force and found.tasks and save_backup is not None:
            result.backups.append(save_backup(found.review_id, found.tasks))
        result.gone_decisions += [f"review task {r} (source task {s})" for r, s in found.gone]
    owned_ids = _undo_predictions(client, ledger, project_id, result)
    _undo_accepted(client, ledger, project_id, result)
    view, extra_views = owned_view(client, ledger, project_id)
    views = [entry for entry in (view, *extra_views) if entry is not None]
    for entry in views:
        _restore_model_version(client, project_id, entry.data.get("model_version_set"))
        client.delete_view(int(entry.data["object_id"]))
        ledger.remove(entry)
        result.views_deleted += 1
    for entry in reviews:
        client.delete_project(int(entry.data["object_id"]))
        ledger.remove(entry)
        result.review_project_deleted = int(entry.data["object_id"])
    for entry in ledger.entries(project_id, "gone_source"):
        ledger.remove(entry)
    result.left_alone = lookalikes(
        client,
        project_id,
        {int(e.data["object_id"]) for e in reviews},
        {int(e.data["object_id"]) for e in views},
        owned_ids,
    )
    return result


def _restore_model_version(client: LabelStudioClient, project_id: int, set_by_relabel: str | None) -> None:
    """Put the project's ``model_version`` setting back to unset (``""``) where relabel set it (its view's
    ledger entry says which) and it still is that (or None: Label Studio clears it when the version's
    predictions are deleted); a version someone chose since is left alone."""
    if set_by_relabel and client.get_project(project_id).get("model_version") in (set_by_relabel, None):
        client.update_project(project_id, model_version="")


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
