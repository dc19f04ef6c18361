"""The review queue, planned: what relabel writes to Label Studio and how a re-run reconciles it.

Nothing here talks to the server: these are the names, results and pure planning functions that
:mod:`connectors.label_studio.push` (push) and :mod:`connectors.label_studio.review` (sync, undo) carry out.

Everything here is additive and idempotent, and never edits or deletes a human annotation.

Two queue modes
---------------
``view``, inside the source project:
    * one prediction per flagged task, ``model_version = "relabel-<method>"``, as result the label the
      model suggests (a ``choices`` region for the project's Choices control), ``score`` = the model's
      probability of that label (Label Studio's convention: the Data Manager shows and sorts it as the
      prediction's confidence), ``mislabeling`` = the item's normalised suspicion in [0, 1];
    * one Data Manager view titled ``relabel: review queue`` whose filter keeps the tasks holding
      relabel's predictions (see :func:`view_data`) and whose ordering is ``["-tasks:predictions_score"]``
      (effective only where the project's ``model_version`` setting is relabel's, which relabel does not
      change: otherwise the tab lists tasks in id order).

    A re-run finds its predictions and its view through relabel's ledger (their recorded ids): predictions
    that are already right are left alone, stale ones are deleted, missing ones created, the view updated.

``project`` (default), a separate review project (the only real queue in Label Studio OSS, which never
puts an already-labelled task back in the labeling stream):
    * titled ``<source title> — relabel review``, found again through relabel's ledger (its recorded id;
      the description marker ``[relabel-review-of:<id>]`` is for people), Sequential sampling, the source
      labeling config plus one ``Text`` tag showing relabel's note (``$relabel_note``);
    * one task per flagged source task, created in rank order, with the source task's data plus
      ``relabel_source_task``, ``relabel_rank``, ``relabel_score``, ``relabel_suggested``,
      ``relabel_probability``, ``relabel_tier``, ``relabel_current`` and ``relabel_note``, and the model's
      suggested label pre-filled as a prediction (model_version ``relabel-suggestion``, set as the review
      project's model version so that Label Studio pre-fills the labeling form with it; its ``score`` is
      the model's probability of that label).

    A re-run keeps every review task a reviewer touched (annotation, skip or draft), never creates a second
    task for the same source task, and replaces the untouched ones so that the queue is again in rank order.

``sync`` copies each reviewed task's decision (the reviewer's latest non-cancelled annotation) to the source
task as a NEW annotation, ``completed_by`` the reviewer, whose single region carries the id
``relabel-sync-<review annotation id>``: that id is how a re-sync knows a decision is already there.

``undo`` deletes the predictions whose model_version starts with ``relabel-``, the views titled
``relabel: review queue`` and the review project, and nothing else. It refuses to delete a review project
holding reviewer decisions that were not synced yet (``force=True`` overrides).

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
      the API have ``""`` there, and then Label Studio shows tasks in id order. relabel does not change the
      project's settings to force it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.label_studio.config import ClassificationTarget
from relabel.dataset import FlaggedItem
from relabel.errors import InputError

MODEL_VERSION_PREFIX = "relabel-"
SUGGESTION_MODEL_VERSION = "relabel-suggestion"  # the review project's pre-filled suggestion
VIEW_TITLE = "relabel: review queue"
REVIEW_TITLE_SUFFIX = " — relabel review"
SYNC_REGION_PREFIX = "relabel-sync-"
ACCEPT_REGION_PREFIX = "relabel-accept-"  # region id of a suggestion accepted in bulk by `relabel accept`
RELABEL_DATA_KEYS = (
    "relabel_source_task",
    "relabel_rank",
    "relabel_score",
    "relabel_suggested",
    "relabel_probability",
    "relabel_tier",
    "relabel_current",
    "relabel_note",
)
NOTE_TAG_NAME = "relabel_note"
PROJECT_TITLE_MAX_LENGTH = 50  # Label Studio's PROJECT_TITLE_MAX_LEN
QUEUE_MODES = ("view", "project")

# Chunk sizes for bulk requests (one request per chunk). A prediction import costs a few seconds per request
# whatever its size on a local 1.23 server (2,000 predictions: 5.7 s in one request, 18.6 s in four), so
# predictions go in as few requests as possible.
PREDICTION_IMPORT_CHUNK = 5000
# Data Manager columns relabel's tab hides (Label Studio 1.23 column ids).
HIDDEN_VIEW_COLUMNS = (
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
    review_tasks_removed: int = 0
    already_reviewed: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One or two human-readable lines."""
        if self.mode == "view":
            verb = "created" if self.view_created else "updated"
            return (
                f"view '{VIEW_TITLE}' {verb} in project {self.project_id} with {self.n_flagged} tasks "
                f"(predictions: {self.predictions_created} new, {self.predictions_kept} unchanged, "
                f"{self.predictions_deleted} removed): {self.url}"
            )
        verb = "created" if self.review_project_created else "updated"
        return (
            f"review project {self.review_project_id} {verb} for project {self.project_id}: "
            f"{self.review_tasks_created} tasks added, {self.review_tasks_kept} kept, "
            f"{self.review_tasks_removed} removed, {self.already_reviewed} flagged tasks already reviewed: "
            f"{self.url}"
        )


@dataclass
class SyncResult:
    """Counts of one sync: reviewed tasks, labels reviewers changed, annotations added or already there."""

    source_project_id: int
    review_project_id: int
    reviewed: int = 0
    labels_changed: int = 0
    agreed_with_suggestion: int = 0
    annotations_added: int = 0
    already_synced: int = 0
    added_task_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable line."""
        return (
            f"review project {self.review_project_id}: {self.reviewed} tasks reviewed, reviewers changed "
            f"{self.labels_changed} labels; {self.annotations_added} new annotations added to project "
            f"{self.source_project_id}, {self.already_synced} already synced"
        )


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

    def summary(self) -> str:
        """One human-readable line, plus one line per look-alike left alone."""
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


def review_label_config(source_config: str) -> str:
    """The source labeling config plus a ``Text`` tag that shows relabel's note about the task."""
    if f'name="{NOTE_TAG_NAME}"' in source_config:
        return source_config
    note_tag = f'<Text name="{NOTE_TAG_NAME}" value="${NOTE_TAG_NAME}"/>'
    position = source_config.rfind("</View>")
    if position < 0:
        raise InputError("The source labeling config has no closing </View>; cannot build the review project")
    return source_config[:position] + f"  {note_tag}\n" + source_config[position:]


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
    suggested label as result, ``score`` = the model's probability of it (Label Studio's convention), and
    ``mislabeling`` = the normalised suspicion (written in a second pass: the bulk import ignores it)."""
    model_version = f"{MODEL_VERSION_PREFIX}{method}"
    wanted = {}
    for item in items:
        payload: dict[str, Any] = {
            "task": item.task_id,
            "model_version": model_version,
            "result": target.result(item.suggested),
            "mislabeling": round_score(item.score),
        }
        if item.probability is not None:
            payload["score"] = round_score(item.probability)
        wanted[item.task_id] = payload
    return wanted


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


def _same_number(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return abs(float(left) - float(right)) < 1e-9


def _prediction_matches(prediction: dict[str, Any], target: dict[str, Any] | None, mislabeling: bool) -> bool:
    if target is None:
        return False
    return (
        prediction.get("model_version") == target["model_version"]
        and prediction.get("result") == target["result"]
        and _same_number(prediction.get("score"), target.get("score"))
        and (not mislabeling or _same_number(prediction.get("mislabeling") or 0.0, target["mislabeling"]))
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
        # Show the item (task data), the given label (annotation results), the suggestion (prediction
        # results) and its probability; hide the bookkeeping columns.
        "hiddenColumns": {"explore": [f"tasks:{name}" for name in HIDDEN_VIEW_COLUMNS], "labeling": []},
    }


def review_task_meta(item: FlaggedItem, current: str | None) -> dict[str, Any]:
    """The relabel fields of one review task (see ``RELABEL_DATA_KEYS``)."""
    shown = current if current is not None else "(none)"
    return {
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
    }


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


@dataclass
class ReviewTaskPlan:
    """How to turn the review project's tasks into the wanted queue, in rank order.

    ``touched_sources``: source tasks whose review task a reviewer touched (annotation or draft): kept as
    they are and not queued again. ``delete``: untouched review tasks to remove; ``create``: relabel fields
    of the tasks to import, in rank order; ``kept``: untouched tasks kept as they are; ``unchanged``: tasks
    deleted and created again identically (reported as kept, not as removed + created).
    """

    touched_sources: set[int]
    delete: list[int]
    create: list[dict[str, Any]]
    kept: int
    unchanged: int


def review_queue_state(existing: Sequence[dict[str, Any]]) -> tuple[set[int], list[dict[str, Any]]]:
    """(source tasks whose review task a reviewer touched, the untouched review tasks in id order)."""
    touched: set[int] = set()
    untouched: list[dict[str, Any]] = []
    for task in existing:
        source = (task.get("data") or {}).get("relabel_source_task")
        if task.get("annotations") or task.get("drafts"):
            if source is not None:
                touched.add(int(source))
        else:
            untouched.append(task)
    return touched, sorted(untouched, key=lambda task: int(task["id"]))


def plan_review_tasks(
    touched: set[int], untouched: Sequence[dict[str, Any]], wanted: Sequence[dict[str, Any]]
) -> ReviewTaskPlan:
    """Plan a project-mode push: keep the untouched queue when it is a prefix of the wanted one (append the
    rest), else replace the untouched tasks with the wanted queue."""
    current = [{key: (task.get("data") or {}).get(key) for key in RELABEL_DATA_KEYS} for task in untouched]
    if current == list(wanted[: len(current)]):
        return ReviewTaskPlan(touched, [], list(wanted[len(current) :]), kept=len(current), unchanged=0)
    same = {json.dumps(meta, sort_keys=True) for meta in current} & {
        json.dumps(meta, sort_keys=True) for meta in wanted
    }
    return ReviewTaskPlan(
        touched, [int(task["id"]) for task in untouched], list(wanted), kept=0, unchanged=len(same)
    )
