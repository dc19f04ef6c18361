"""The review queue, planned: what relabel writes to Label Studio and how a re-run reconciles it.

Nothing here talks to the server: these are the names, results and pure planning functions that
:mod:`connectors.label_studio.push` (push) and :mod:`connectors.label_studio.review` (sync, undo) carry out.

Everything here is additive and idempotent, and never edits or deletes a human annotation.

Two queue modes
---------------
``view``, inside the source project:
    * one prediction per flagged task, ``model_version = "relabel-<method>"``, as result the label the
      model suggests (a ``choices`` region for the project's Choices control), ``score`` and
      ``mislabeling`` = the item's normalised suspicion in [0, 1] (the score is what the Data Manager
      shows as a column and sorts by; see :func:`wanted_predictions`);
    * one Data Manager view titled ``relabel: review queue`` whose filter keeps the tasks holding
      relabel's predictions (see :func:`view_data`) and whose ordering is ``["-tasks:predictions_score"]``,
      most suspicious first. That ordering (and the score column) works only where the project's
      ``model_version`` setting is relabel's: relabel sets it where it is unset (``""``, as in every project
      created without an ML backend; ``undo`` unsets it again) and leaves a version the user chose alone,
      saying in one line that the tab then lists tasks by id.

    A re-run finds its predictions and its view through relabel's ledger (their recorded ids): predictions
    that are already right are left alone, stale ones are deleted, missing ones created, the view updated.

``project`` (default), a separate review project (the only real queue in Label Studio OSS, which never
puts an already-labelled task back in the labeling stream):
    * titled ``<source title> — relabel review``, found again through relabel's ledger (its recorded id;
      the description marker ``[relabel-review-of:<id>]`` is for people), Sequential sampling, the source
      labeling config with a compact reason block above the item, instructions shown before labeling, and
      a Data Manager tab with readable columns sorted by rank (all in
      :mod:`connectors.label_studio.reviewer_view`);
    * one task per flagged source task, created in rank order, with the source task's data plus
      ``relabel_source_task``, ``relabel_rank``, ``relabel_score``, ``relabel_suggested``,
      ``relabel_probability``, ``relabel_tier``, ``relabel_current``, ``relabel_note``, ``relabel_reasons``
      (the reason block's HTML) and the readable copies of rank, tier and labels, and the model's
      suggested label pre-filled as a prediction (model_version ``relabel-suggestion``, set as the review
      project's model version so that Label Studio pre-fills the labeling form with it; its ``score`` is
      the model's probability of that label).

    The review project's ``skip_queue`` is set to ``REQUEUE_FOR_ME`` when relabel creates it (once, for a
    review project an older relabel made): a reviewer who presses Skip gets the task again at the end of
    their own queue (Label Studio's default, ``REQUEUE_FOR_OTHERS``, offers it only to *other* reviewers,
    so with one reviewer it was lost). A setting a person changes later is left alone.

    A re-run keeps the queue stable (:func:`plan_review_tasks`): a review task whose item is still flagged
    keeps its task id and has its relabel fields (rank, suspicion, tier, suggestion, note) and its
    suggestion prediction updated in place; new items are appended (after the existing tasks: Sequential
    sampling follows task ids); only tasks whose items left the queue are deleted, and never one holding
    reviewer work (an annotation, a skip or a draft). A task that was only skipped stays in the queue. A
    task holding a decision (a submitted, non-skipped annotation) is out of the queue: relabel clears its
    ``relabel_rank`` (its note keeps the rank the reviewer saw) and changes nothing else on it, so that
    ranks are unique and current. Each source task has one review task.

    Before changing anything, a re-run whose queue changes size prints one line with the old and the new
    size and why (the recorded top/top_fraction and item count of the run that made the queue, and this
    run's): :func:`size_change_line`. The same holds for ``view``.

``sync`` copies each reviewed task's decision (the reviewer's latest non-cancelled annotation) to the source
task as a NEW annotation, ``completed_by`` the reviewer, whose single region carries the id
``relabel-sync-<review annotation id>``: that id is how a re-sync knows a decision is already there.

``undo`` deletes the predictions, the view and the review project that relabel's ledger records, and the
annotations of ``relabel accept`` still exactly as relabel wrote them; nothing else (see
:mod:`connectors.label_studio.review`). It refuses to delete a review project holding reviewer work
(decisions not yet synced, drafts, skips) unless forced, and then saves that work to a local file first.

Label Studio 1.23 facts this relies on (measured against a local server):
    * ``POST /api/projects/{id}/import/predictions`` bulk-creates predictions (``task``, ``result``,
      ``score``, ``model_version``) but ignores ``mislabeling``; that field is only written by
      ``POST``/``PATCH /api/predictions/{id}/``, one request per prediction (≈50–80 ms each on a local
      server), so it is written in a second, optional pass (``write_mislabeling``).
    * ``DELETE /api/projects/{id}/model-versions/`` with ``{"model_version": v}`` deletes every prediction of
      that version in one request (≈12 ms per prediction); ``DELETE /api/predictions/{id}/`` one at a time.
    * ``GET /api/predictions/?project={id}`` returns all predictions of a project, unpaginated.
    * ``GET /api/projects/{id}/export?exportType=JSON&download_all_tasks=true&ids[]=…`` returns tasks with
      annotations, drafts and predictions; without ``download_all_tasks`` only annotated tasks come back.
    * ``POST /api/projects/{id}/import`` with ``[{"data": …, "predictions": […]}]`` creates tasks in list
      order (ascending ids, i.e. Sequential-sampling order).
    * ``POST /api/dm/actions?id=delete_tasks&project={id}`` with ``{"selectedItems": {"all": false,
      "included": [ids]}}`` deletes tasks in bulk.
    * The view ordering ``-tasks:predictions_score`` sorts by the average prediction score only when the
      project's ``model_version`` setting is unset (``None``) or equals relabel's; projects created through
      the API have ``""`` there, and then Label Studio shows tasks in id order and an empty score column.
      ``PATCH /api/projects/{id}/`` accepts a ``model_version`` only once predictions of it exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.label_studio.annotations import counting_annotations
from connectors.label_studio.config import ClassificationTarget
from connectors.label_studio.reviewer_view import DISPLAY_COLUMNS, REASONS_TAG_NAME, display_fields
from relabel.dataset import FlaggedItem

MODEL_VERSION_PREFIX = "relabel-"
SUGGESTION_MODEL_VERSION = "relabel-suggestion"  # the review project's pre-filled suggestion
VIEW_TITLE = "relabel: review queue"
REVIEW_TITLE_SUFFIX = " — relabel review"
SYNC_REGION_PREFIX = "relabel-sync-"
ACCEPT_REGION_PREFIX = "relabel-accept-"  # region id of a suggestion accepted in bulk by `relabel accept`
RELABEL_FIELD_KEYS = (
    "relabel_source_task",
    "relabel_rank",
    "relabel_score",
    "relabel_suggested",
    "relabel_probability",
    "relabel_tier",
    "relabel_current",
    "relabel_note",
    REASONS_TAG_NAME,
)
# The machine-readable fields above, then the same facts under keys that read as Data Manager column titles.
RELABEL_DATA_KEYS = RELABEL_FIELD_KEYS + tuple(DISPLAY_COLUMNS)
# What a task out of the queue gets: no rank (in both the machine field and its readable column).
UNRANKED = {
    "relabel_rank": None,
    **{key: None for key, name in DISPLAY_COLUMNS.items() if name == "relabel_rank"},
}
PROJECT_TITLE_MAX_LENGTH = 50  # Label Studio's PROJECT_TITLE_MAX_LEN

# Chunk sizes for bulk requests (one request per chunk). A prediction import costs a few seconds per request
# whatever its size on a local 1.23 server (2,000 predictions: 5.7 s in one request, 18.6 s in four), so
# predictions go in as few requests as possible.
PREDICTION_IMPORT_CHUNK = 5000
# Data Manager columns relabel's tab hides (Label Studio 1.23 column ids). The annotation and prediction
# results are shown as raw JSON cut off before the label, so they are hidden too.
HIDDEN_VIEW_COLUMNS = (
    "annotations_results",
    "predictions_results",
    "inner_id",
    "completed_at",
    "total_annotations",
    "cancelled_annotations",
    "total_predictions",
    "annotators",
    "annotations_ids",
    "predictions_model_versions",
    "file_upload",
    "storage_filename",
    "created_at",
    "updated_at",
    "updated_by",
    "avg_lead_time",
    "draft_exists",
)
TASK_IMPORT_CHUNK = 250
# Rough per-item costs (seconds) on a local server, used to choose between per-item and bulk deletion.
SECONDS_PER_ITEM_DELETE = 0.08
SECONDS_PER_BULK_DELETED = 0.012
SECONDS_PER_MISLABELING_PATCH = 0.06
SECONDS_PER_BULK_CREATED = 0.002
# Threads used for the one-request-per-item passes (mislabeling, single deletions, sync annotations).
PARALLEL_REQUESTS = 2


# ---------------------------------------------------------------------------------------------- results


@dataclass
class PushResult:
    """What one push created, kept and removed, and where to look."""

    mode: str
    project_id: int
    n_flagged: int
    url: str
    predictions_created: int = 0
    predictions_kept: int = 0
    predictions_deleted: int = 0
    mislabeling_written: int = 0
    view_id: int | None = None
    view_created: bool = False
    review_project_id: int | None = None
    review_project_created: bool = False
    review_tasks_created: int = 0
    review_tasks_kept: int = 0
    review_tasks_updated: int = 0
    review_tasks_removed: int = 0
    review_tasks_kept_with_work: int = 0
    already_reviewed: int = 0
    model_version_note: str = ""  # view mode: why the tab cannot sort by suspicion (empty when it does)
    skipped: int = 0
    pending: int = 0
    review_states: dict[int, str] = field(default_factory=dict)
    size_change: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """One or two human-readable lines."""
        if self.mode == "view":
            verb = "created" if self.view_created else "updated"
            line = (
                f"view '{VIEW_TITLE}' {verb} in project {self.project_id} with {self.n_flagged} tasks "
                f"(predictions: {self.predictions_created} new, {self.predictions_kept} unchanged, "
                f"{self.predictions_deleted} removed): {self.url}"
            )
            return line + (f"\n{self.model_version_note}" if self.model_version_note else "")
        verb = "created" if self.review_project_created else "updated"
        kept_with_work = (
            f", {self.review_tasks_kept_with_work} kept because a reviewer worked on them though their "
            "items left the queue"
            if self.review_tasks_kept_with_work
            else ""
        )
        return (
            f"review project {self.review_project_id} {verb} for project {self.project_id}: "
            f"{self.n_flagged} flagged items: {self.already_reviewed} reviewed, {self.skipped} skipped "
            f"(back in the queue), {self.pending} pending; review tasks: {self.review_tasks_created} added, "
            f"{self.review_tasks_updated} updated in place, {self.review_tasks_kept} unchanged, "
            f"{self.review_tasks_removed} removed (their items left the queue){kept_with_work}: {self.url}"
        )


@dataclass
class SyncResult:
    """Counts of one sync: review tasks reviewed (a decision), skipped (cancelled annotations only: no
    decision) and pending (no annotation; drafts included), labels reviewers changed, annotations added or
    already there; ``review_states``: source task → the state of its review task."""

    source_project_id: int
    review_project_id: int
    reviewed: int = 0
    skipped: int = 0
    pending: int = 0
    labels_changed: int = 0
    agreed_with_suggestion: int = 0
    annotations_added: int = 0
    already_synced: int = 0
    added_task_ids: list[int] = field(default_factory=list)
    review_states: dict[int, str] = field(default_factory=dict)  # source task → reviewed/skipped/pending
    source_gone: list[str] = field(default_factory=list)  # named now: their source task was deleted
    source_gone_total: int = 0  # decisions on deleted source tasks, named now or by an earlier sync

    def summary(self) -> str:
        """One human-readable line, plus one line per decision whose source task was deleted (once)."""
        line = (
            f"review project {self.review_project_id}: {self.reviewed} tasks reviewed, {self.skipped} "
            f"skipped (not decided: they come back to the reviewer), {self.pending} pending; reviewers "
            f"changed {self.labels_changed} labels; {self.annotations_added} new annotations added to "
            f"project {self.source_project_id}, {self.already_synced} already synced"
        )
        if self.source_gone_total:
            line += f", {self.source_gone_total} on deleted source tasks (not copied)"
        return "\n".join([line, *(f"not copied: {name}" for name in self.source_gone)])


@dataclass
class AcceptResult:
    """What ``relabel accept`` did: the tier, the suggestions accepted as new annotations (task ids), and,
    when nothing was accepted, why (``pending``: untouched review tasks of the tier; ``declined``: the
    confirmation was answered no)."""

    source_project_id: int
    review_project_id: int
    tier: str
    accepted_task_ids: list[int] = field(default_factory=list)
    pending: int = 0
    declined: bool = False

    def summary(self) -> str:
        """One human-readable line."""
        if self.declined:
            return (
                f"nothing accepted: the {self.pending} suggestions of tier {self.tier!r} stay in review "
                f"project {self.review_project_id}'s queue"
            )
        if not self.accepted_task_ids:
            return (
                f"nothing accepted: review project {self.review_project_id} holds no untouched task of tier "
                f"{self.tier!r}"
            )
        return (
            f"project {self.source_project_id}: accepted the model's suggestion for "
            f"{len(self.accepted_task_ids)} tasks of tier {self.tier!r} as new annotations (region ids "
            f"{ACCEPT_REGION_PREFIX}…; `relabel undo` removes them); they left review project "
            f"{self.review_project_id}'s queue"
        )


@dataclass
class AcceptPreview:
    """What ``relabel accept --dry-run`` would accept: per tier, the untouched review tasks (source task
    id, current label, suggested label), in rank order. Nothing is written to make it."""

    source_project_id: int
    review_project_id: int
    tiers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def summary(self, tier: str | None = None) -> str:
        """A count line per tier, then the items of ``tier`` (all tiers' when None), one line each."""
        lines = [
            f"dry run: nothing written. Review project {self.review_project_id}, untouched tasks per tier:"
        ]
        lines += [f"  {name}: {len(items)} would be accepted" for name, items in self.tiers.items()]
        for name, items in self.tiers.items():
            if tier is not None and name != tier:
                continue
            if items:
                lines.append(f"{name}: source task, current label → suggested label")
            lines += [f"  {item['source_task']}  {item['current']} → {item['suggested']}" for item in items]
        return "\n".join(lines)


@dataclass
class UndoResult:
    """What undo removed."""

    project_id: int
    predictions_deleted: int = 0
    model_versions: list[str] = field(default_factory=list)
    views_deleted: int = 0
    review_project_deleted: int | None = None
    accepted_annotations_deleted: int = 0
    left_alone: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # one line per kind of content a person changed, kept
    backups: list[str] = field(default_factory=list)  # files holding a review project's work (--force)
    gone_decisions: list[str] = field(default_factory=list)  # decisions on deleted source tasks

    def summary(self) -> str:
        """One human-readable line, plus one line per backup written, per kind of content kept and per
        look-alike left alone."""
        review = (
            f"review project {self.review_project_deleted} deleted"
            if self.review_project_deleted is not None
            else "no review project"
        )
        lines = [
            f"project {self.project_id}: {self.predictions_deleted} relabel predictions deleted "
            f"({', '.join(self.model_versions) or 'none'}), {self.views_deleted} views deleted, {review}"
            + (
                f", {self.accepted_annotations_deleted} accepted suggestions removed"
                if self.accepted_annotations_deleted
                else ""
            )
        ]
        lines += [
            f"saved the review project's annotations and drafts first to {path}" for path in self.backups
        ]
        if self.gone_decisions:
            lines.append(
                "deleted with the review project: decisions on source tasks a person deleted: "
                + ", ".join(self.gone_decisions)
            )
        lines += self.kept
        lines += [
            f"left alone (looks like relabel's, but relabel did not create it): {n}" for n in self.left_alone
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- names


def review_marker(source_project_id: int) -> str:
    """The stable marker relabel writes into a review project's description."""
    return f"[relabel-review-of:{int(source_project_id)}]"


def review_title(source_title: str) -> str:
    """``<source title> — relabel review``, the source title shortened to fit Label Studio's 50 characters."""
    room = PROJECT_TITLE_MAX_LENGTH - len(REVIEW_TITLE_SUFFIX)
    if len(source_title) > room:
        source_title = source_title[: room - 1].rstrip() + "…"
    return f"{source_title}{REVIEW_TITLE_SUFFIX}"


# ---------------------------------------------------------------------------------------------- planning


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def round_score(value: float) -> float:
    """Scores as stored in Label Studio: 6 decimals, so that a re-run compares equal."""
    return round(float(value), 6)


def is_relabel_version(model_version: str | None) -> bool:
    """Whether a prediction's ``model_version`` is one relabel writes."""
    return bool(model_version) and str(model_version).startswith(MODEL_VERSION_PREFIX)


def find_review_project(projects: Sequence[dict[str, Any]], source_project_id: int) -> dict[str, Any] | None:
    """The review project made for ``source_project_id`` among ``projects`` (by its description marker)."""
    marker = review_marker(source_project_id)
    return next((p for p in projects if marker in (p.get("description") or "")), None)


def wanted_predictions(
    items: Sequence[FlaggedItem], method: str, target: ClassificationTarget
) -> dict[int, dict[str, Any]]:
    """task id → the prediction a view-mode push wants on it: model_version ``relabel-<method>``, the
    suggested label as result, and ``score`` = ``mislabeling`` = the item's normalised suspicion in [0, 1]
    (``mislabeling`` is written in a second pass: the bulk import ignores it).

    The score is the suspicion, not the model's probability of its suggestion (Label Studio's usual meaning
    of a prediction score), because it is the only per-task number relabel can put in the source project that
    the Data Manager shows as a column and sorts by: with it, relabel's tab lists the flagged tasks most
    suspicious first (rank = row) with the suspicion in its "Prediction score" column.
    """
    model_version = f"{MODEL_VERSION_PREFIX}{method}"
    return {
        item.task_id: {
            "task": item.task_id,
            "model_version": model_version,
            "result": target.result(item.suggested),
            "score": round_score(item.score),
            "mislabeling": round_score(item.score),
        }
        for item in items
    }


@dataclass
class PredictionPlan:
    """How to turn the existing relabel predictions into the wanted ones.

    ``keep``: task → existing prediction already right; ``delete_versions``: model_versions to delete
    whole (cheaper than one request per stale prediction; their kept predictions are re-created);
    ``delete_ids``: stale predictions to delete one by one; ``create``: payloads to import;
    ``recreated``: kept predictions that a whole-version deletion takes away and ``create`` puts back.
    """

    keep: dict[int, dict[str, Any]] = field(default_factory=dict)
    delete_versions: list[str] = field(default_factory=list)
    delete_ids: list[int] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    recreated: int = 0


def same_number(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return abs(float(left) - float(right)) < 1e-9


def _prediction_matches(prediction: dict[str, Any], target: dict[str, Any] | None, mislabeling: bool) -> bool:
    if target is None:
        return False
    return (
        prediction.get("model_version") == target["model_version"]
        and prediction.get("result") == target["result"]
        and same_number(prediction.get("score"), target.get("score"))
        and (not mislabeling or same_number(prediction.get("mislabeling") or 0.0, target["mislabeling"]))
    )


def plan_predictions(
    existing: Sequence[dict[str, Any]],
    wanted: dict[int, dict[str, Any]],
    write_mislabeling: bool,
    whole_versions: set[str] | frozenset[str] = frozenset(),
) -> PredictionPlan:
    """Plan a view-mode push from relabel's own predictions in the project (``existing``) and ``wanted``.

    A prediction that already is the wanted one is kept (one per task); every other is stale. Stale ones
    are deleted one request each, or, for a model_version in ``whole_versions`` (every prediction of it in
    the project is relabel's), the whole version in one request where the cost model (``SECONDS_PER_*``)
    says that is cheaper even after re-creating the kept ones.
    """
    plan = PredictionPlan()
    stale: dict[str, list[dict[str, Any]]] = {}
    per_version: dict[str, int] = {}
    for prediction in sorted(existing, key=lambda p: p["id"]):
        task = int(prediction["task"])
        version = str(prediction["model_version"])
        per_version[version] = per_version.get(version, 0) + 1
        if task not in plan.keep and _prediction_matches(prediction, wanted.get(task), write_mislabeling):
            plan.keep[task] = prediction
        else:
            stale.setdefault(version, []).append(prediction)
    per_kept = SECONDS_PER_BULK_CREATED + (SECONDS_PER_MISLABELING_PATCH if write_mislabeling else 0.0)
    for version, stale_here in stale.items():
        kept_here = [task for task, p in plan.keep.items() if p.get("model_version") == version]
        bulk_cost = per_version[version] * SECONDS_PER_BULK_DELETED + len(kept_here) * per_kept
        if version in whole_versions and len(stale_here) * SECONDS_PER_ITEM_DELETE > bulk_cost:
            plan.delete_versions.append(version)
            for task in kept_here:
                del plan.keep[task]
            plan.recreated += len(kept_here)
        else:
            plan.delete_ids.extend(int(p["id"]) for p in stale_here)
    plan.create = [payload for task, payload in wanted.items() if task not in plan.keep]
    return plan


def view_data(model_version: str) -> dict[str, Any]:
    """The Data Manager tab relabel writes: its title, a filter to the tasks holding relabel's predictions,
    the ordering.

    The filter is on the "Prediction model versions" column (type List, operator ``contains``), which the
    Data Manager front end accepts; a filter on task ids with operator ``in_list`` is accepted by the server
    but makes the front end fail to load the whole project (a mobx-state-tree union error), so it is not used.
    """
    return {
        "title": VIEW_TITLE,
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:predictions_model_versions",
                    "operator": "contains",
                    "type": "List",
                    "value": [model_version],
                }
            ],
        },
        "ordering": ["-tasks:predictions_score"],
        # Show the task id, the suspicion (the "Prediction score" column) and the item (task data); hide
        # the bookkeeping columns and the raw-JSON results.
        "hiddenColumns": {"explore": [f"tasks:{name}" for name in HIDDEN_VIEW_COLUMNS], "labeling": []},
    }


def review_task_meta(item: FlaggedItem, current: str | None, reasons: str = "") -> dict[str, Any]:
    """The relabel fields of one review task (see ``RELABEL_DATA_KEYS``); ``reasons``: its reason block
    (:func:`connectors.label_studio.reviewer_view.reasons_html`)."""
    shown = current if current is not None else "(none)"
    meta = {
        "relabel_source_task": item.task_id,
        "relabel_rank": int(item.rank),
        "relabel_score": round_score(item.score),
        "relabel_suggested": item.suggested,
        "relabel_probability": None if item.probability is None else round_score(item.probability),
        "relabel_tier": item.tier,
        "relabel_current": current,
        "relabel_note": (
            f"relabel rank {item.rank} (suspicion {item.score:.2f}"
            + ("" if item.tier is None else f", {item.tier}")
            + f"): current label {shown}; "
            f"the model suggests {item.suggested}"
            + ("" if item.probability is None else f" (p = {item.probability:.2f})")
            + " (pre-filled: submit to accept it, or pick another label)"
        ),
        REASONS_TAG_NAME: reasons,
    }
    return {**meta, **display_fields(meta)}


def review_task_payload(
    meta: dict[str, Any], source_data: dict[str, Any], target: ClassificationTarget
) -> dict[str, Any]:
    """A review task to import: the source task's data plus the relabel fields, and the model's suggested
    label pre-filled as a prediction (model_version ``relabel-suggestion``, ``score`` = the model's
    probability of it)."""
    data = {key: value for key, value in source_data.items() if key not in RELABEL_DATA_KEYS}
    data.update(meta)
    prediction: dict[str, Any] = {
        "model_version": SUGGESTION_MODEL_VERSION,
        "result": target.result(meta["relabel_suggested"]),
    }
    if meta.get("relabel_probability") is not None:
        prediction["score"] = meta["relabel_probability"]
    return {"data": data, "predictions": [prediction]}


# Review-task states (:func:`review_task_state`); the queue holds the skipped and pending ones.
REVIEWED, SKIPPED, PENDING = "reviewed", "skipped", "pending"
SKIP_QUEUE = "REQUEUE_FOR_ME"  # the review project's skip setting: a skipped task comes back to its reviewer


def review_task_state(task: dict[str, Any]) -> str:
    """``reviewed``: the task holds a decision (a counting annotation: submitted, not cancelled, non-empty
    result; what ``sync`` copies); ``skipped``: it holds annotations but none counts (Skip leaves a cancelled
    annotation with an empty result); ``pending``: no annotation (a draft is work in progress: pending)."""
    if counting_annotations(task):
        return REVIEWED
    return SKIPPED if task.get("annotations") else PENDING


def holds_reviewer_work(task: dict[str, Any]) -> bool:
    """Whether a person left anything on the task: an annotation (skips included) or a draft."""
    return bool(task.get("annotations") or task.get("drafts"))


def relabel_fields(task: dict[str, Any]) -> dict[str, Any]:
    """The relabel fields (``RELABEL_DATA_KEYS``) of a review task, as stored."""
    data = task.get("data") or {}
    return {key: data.get(key) for key in RELABEL_DATA_KEYS}


def index_review_tasks(
    existing: Sequence[dict[str, Any]],
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """(source task → its review task, the surplus review tasks of a source task).

    A source task has one review task; a surplus one (left by a run killed mid-import) is possible, and then
    the one with the most reviewer work is the source's (decided, then skipped, then drafted, then the
    oldest). Tasks without ``relabel_source_task`` are not relabel's rows and are ignored.
    """
    work = {REVIEWED: 0, SKIPPED: 1, PENDING: 2}
    with_source = [
        task for task in existing if (task.get("data") or {}).get("relabel_source_task") is not None
    ]
    ordered = sorted(
        with_source, key=lambda t: (work[review_task_state(t)], not t.get("drafts"), int(t["id"]))
    )
    by_source: dict[int, dict[str, Any]] = {}
    surplus: list[dict[str, Any]] = []
    for task in ordered:
        source = int(task["data"]["relabel_source_task"])
        if source in by_source:
            surplus.append(task)
        else:
            by_source[source] = task
    return by_source, surplus


@dataclass
class ReviewTaskPlan:
    """How to turn the review project's tasks into the wanted queue without moving what stays.

    ``states``: flagged source task → ``reviewed`` | ``skipped`` | ``pending`` (new ones are pending).
    ``update``: (review task, wanted relabel fields) of queued tasks whose fields changed (same task id).
    ``unrank``: tasks out of the queue (decided, or kept for reviewer work though their item left the
    queue) whose ``relabel_rank`` is cleared. ``delete``: tasks without reviewer work whose items left
    the queue (and surplus ones). ``create``: relabel fields of the new items, in rank order.
    ``unchanged``: queued tasks already current; ``kept_with_work``: tasks whose items left the queue, kept
    because they hold reviewer work.
    """

    states: dict[int, str] = field(default_factory=dict)
    update: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    unrank: list[dict[str, Any]] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    kept_with_work: int = 0


def plan_review_tasks(
    by_source: dict[int, dict[str, Any]],
    surplus: Sequence[dict[str, Any]],
    flagged: Sequence[int],
    wanted: dict[int, dict[str, Any]],
) -> ReviewTaskPlan:
    """Plan a project-mode push (module docstring): ``by_source``/``surplus`` from
    :func:`index_review_tasks`, ``flagged`` the flagged source tasks in rank order, ``wanted`` the relabel
    fields of each flagged task that is not ``reviewed``."""
    steps = ReviewTaskPlan()
    for source in flagged:
        task = by_source.get(source)
        state = PENDING if task is None else review_task_state(task)
        steps.states[source] = state
        if task is None:
            steps.create.append(wanted[source])
        elif state == REVIEWED:
            if relabel_fields(task)["relabel_rank"] is not None:
                steps.unrank.append(task)
        elif relabel_fields(task) == wanted[source]:
            steps.unchanged += 1
        else:
            steps.update.append((task, wanted[source]))
    queued = set(flagged)
    left = [task for source, task in by_source.items() if source not in queued] + list(surplus)
    for task in sorted(left, key=lambda t: int(t["id"])):
        if not holds_reviewer_work(task):
            steps.delete.append(int(task["id"]))
            continue
        steps.kept_with_work += 1
        if relabel_fields(task)["relabel_rank"] is not None:
            steps.unrank.append(task)
    return steps


def queue_record(size: int, basis: str | None) -> dict[str, Any]:
    """What the ledger keeps about the queue a push made: its size and why (the run's top setting)."""
    return {"queue_size": int(size), "queue_basis": basis}


def size_change_line(
    where: str, recorded: dict[str, Any], fallback_size: int | None, size: int, basis: str | None
) -> str | None:
    """The one line a push prints before it changes a queue's size (None when the size stays).

    ``recorded``: the ledger entry's data (``queue_size``, ``queue_basis`` of the run that made the queue);
    ``fallback_size``: the queue's size as found on the server, for a queue made before sizes were recorded.
    """
    old = recorded.get("queue_size", fallback_size)
    if old is None or int(old) == int(size):
        return None
    verb = "shrinks" if size < int(old) else "grows"
    old_basis = recorded.get("queue_basis") or "settings not recorded"
    return (
        f"relabel: the {where} {verb} from {int(old)} to {int(size)} items: this run flags "
        f"{basis or 'the items given'}; the queue there was made with {old_basis}"
    )
