"""Push ranked items back to Label Studio as a review queue; sync reviewers' decisions; undo.

Everything here is additive and idempotent, and never edits or deletes a human annotation.

Two queue modes
---------------
``view`` (default), inside the source project:
    * one prediction per flagged task, ``model_version = "relabel-<method>"``, ``score`` = the item's
      normalised suspicion in [0, 1] (see :func:`normalised_suspicion`), ``mislabeling`` = the same number,
      and as result the label the model suggests, as a ``choices`` region for the project's Choices control;
    * one Data Manager view titled ``relabel: review queue`` whose filter is
      ``{"filter": "filter:tasks:id", "operator": "in_list", "type": "Number", "value": [task ids]}`` and
      whose ordering is ``["-tasks:predictions_score"]``.

    A re-run finds its predictions by the ``relabel-`` model_version prefix and its view by title: predictions
    that are already right are left alone, stale ones are deleted, missing ones created, the view updated.

``project``, a separate review project (the only real queue in Label Studio OSS, which never puts an
already-labelled task back in the labeling stream):
    * titled ``<source title> — relabel review``, found again by the marker ``[relabel-review-of:<id>]`` in
      its description (so a renamed project is still found), Sequential sampling, the source labeling config
      plus one ``Text`` tag showing relabel's note (``$relabel_note``);
    * one task per flagged source task, created in rank order, with the source task's data plus
      ``relabel_source_task``, ``relabel_rank``, ``relabel_score``, ``relabel_suggested``,
      ``relabel_current`` and ``relabel_note``, and the current label pre-filled as a prediction
      (model_version ``relabel-current-label``, set as the review project's model version so that Label
      Studio pre-fills the labeling form with it).

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
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import requests
from tqdm.auto import tqdm

from connectors.label_studio import parse_labeling_config
from relabel.errors import ConnectorError, InputError, RelabelError

MODEL_VERSION_PREFIX = "relabel-"
CURRENT_LABEL_MODEL_VERSION = "relabel-current-label"
VIEW_TITLE = "relabel: review queue"
REVIEW_TITLE_SUFFIX = " — relabel review"
SYNC_REGION_PREFIX = "relabel-sync-"
RELABEL_DATA_KEYS = (
    "relabel_source_task",
    "relabel_rank",
    "relabel_score",
    "relabel_suggested",
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
TASK_IMPORT_CHUNK = 250
EXPORT_IDS_CHUNK = 500  # ids per export request: URL parameters, and Django refuses > 1,000 fields
# Rough per-item costs (seconds) on a local server, used to choose between per-item and bulk deletion.
SECONDS_PER_ITEM_DELETE = 0.08
SECONDS_PER_BULK_DELETED = 0.012
SECONDS_PER_MISLABELING_PATCH = 0.06
SECONDS_PER_BULK_CREATED = 0.002
# Threads used for the one-request-per-item passes (mislabeling, single deletions, sync annotations).
PARALLEL_REQUESTS = 2


class LabelStudioRequester(Protocol):
    """What this module needs from a connector (:class:`connectors.label_studio.LabelStudioConnector`).

    ``url``: the server's base URL. ``request(method, path, **kwargs)`` sends one authenticated request to
    ``url + path`` (``kwargs`` as for ``requests``: ``params``, ``json``), returns the ``requests.Response``
    and raises :class:`ConnectorError` with a one-line, token-free message on any failure.
    """

    url: str

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response: ...


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class FlaggedItem:
    """One task to send for review.

    rank:      1 = most suspicious.
    score:     normalised suspicion in [0, 1] (1 = most suspicious of the project).
    suggested: the label the model would give (a class name of the project).
    current:   the task's current label (the one under suspicion), or None when unknown.
    """

    task_id: int
    rank: int
    score: float
    suggested: str
    current: str | None = None


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
class UndoResult:
    """What undo removed."""

    project_id: int
    predictions_deleted: int = 0
    model_versions: list[str] = field(default_factory=list)
    views_deleted: int = 0
    review_project_deleted: int | None = None

    def summary(self) -> str:
        """One human-readable line."""
        review = (
            f"review project {self.review_project_deleted} deleted"
            if self.review_project_deleted is not None
            else "no review project"
        )
        return (
            f"project {self.project_id}: {self.predictions_deleted} relabel predictions deleted "
            f"({', '.join(self.model_versions) or 'none'}), {self.views_deleted} views deleted, {review}"
        )


@dataclass(frozen=True)
class LabelTarget:
    """The Choices control relabel writes to: its name, the object it labels, and its class list."""

    name: str
    to_name: str
    classes: tuple[str, ...]

    @classmethod
    def from_config(cls, label_config: str, control: str | None = None) -> LabelTarget:
        """The single-choice Choices control of a labeling config (the one named ``control`` if given).

        Parsing and the refusal of unsupported configs are the connector's
        (:meth:`connectors.label_studio.LabelingConfig.classification_target`), so push reads a project
        exactly the way pull does.
        """
        target = parse_labeling_config(label_config).classification_target(control)
        return cls(name=target.control.name, to_name=target.object_tag.name, classes=tuple(target.classes))

    def result(self, label: str, region_id: str | None = None) -> list[dict[str, Any]]:
        """A Label Studio ``result`` list choosing ``label``."""
        region: dict[str, Any] = {
            "from_name": self.name,
            "to_name": self.to_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
        if region_id is not None:
            region = {"id": region_id, **region}
        return [region]

    def label_of(self, result: Sequence[dict[str, Any]] | None) -> str | None:
        """The single label chosen with this control in ``result``, or None."""
        for region in result or []:
            if region.get("from_name") == self.name and region.get("type", "choices") == "choices":
                choices = (region.get("value") or {}).get("choices") or []
                if choices:
                    return str(choices[0])
        return None


# ---------------------------------------------------------------------------------------------- helpers


def normalised_suspicion(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Map raw suspicion scores (higher = more suspicious) to [0, 1] by their rank among all items.

    ``value_i = (number of items scoring strictly lower than i) / (n - 1)``: 1.0 for the most suspicious
    item, 0.0 for the least, ties share a value, and the mapping is monotone, so sorting by it reproduces the
    ranking whatever the scale of the method (self-influence is unbounded, loss is in nats). NaN counts as
    lowest.
    """
    values = np.asarray(scores, dtype=np.float64)
    n = len(values)
    if n == 0:
        return values
    if n == 1:
        return np.ones(1)
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.sort(filled)
    below = np.searchsorted(order, filled, side="left")
    return below / (n - 1)


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


def view_url(base_url: str, project_id: int, view_id: int) -> str:
    """Browser URL of a Data Manager tab."""
    return f"{base_url.rstrip('/')}/projects/{project_id}/data?tab={view_id}"


def project_url(base_url: str, project_id: int) -> str:
    """Browser URL of a project's Data Manager."""
    return f"{base_url.rstrip('/')}/projects/{project_id}/data"


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _round_score(value: float) -> float:
    return round(float(value), 6)


def _is_relabel_version(model_version: str | None) -> bool:
    return bool(model_version) and str(model_version).startswith(MODEL_VERSION_PREFIX)


def _annotation_is_valid(annotation: dict[str, Any]) -> bool:
    return not annotation.get("was_cancelled") and bool(annotation.get("result"))


# ---------------------------------------------------------------------------------------------- the queue


class ReviewQueue:
    """Push, sync and undo relabel's review queue on one Label Studio server.

    ``connector``: anything with ``url`` and ``request(method, path, **kwargs)`` (see
    :class:`LabelStudioRequester`), e.g. :class:`connectors.label_studio.LabelStudioConnector`.
    ``progress``: show tqdm bars for the long passes. ``write_mislabeling``: also write each prediction's
    ``mislabeling`` field (one extra request per changed prediction; the bulk import cannot set it).
    """

    def __init__(
        self,
        connector: LabelStudioRequester,
        *,
        progress: bool = False,
        write_mislabeling: bool = True,
        parallel_requests: int = PARALLEL_REQUESTS,
    ) -> None:
        self.connector = connector
        self.progress = progress
        self.write_mislabeling = write_mislabeling
        self.parallel_requests = max(1, int(parallel_requests))

    # ------------------------------------------------------------------ low level
    @property
    def base_url(self) -> str:
        """The server's base URL without a trailing slash."""
        return str(self.connector.url).rstrip("/")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request through the connector; the decoded JSON body, or None when the body is empty."""
        response = self.connector.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"Label Studio answered {method} {path} with non-JSON content; "
                "is the URL the server's base URL?"
            ) from None

    def _bar(self, total: int, description: str) -> tqdm:
        return tqdm(total=total, desc=description, unit="item", disable=not self.progress, leave=False)

    def _each(self, function: Callable[[Any], Any], items: Sequence[Any], description: str) -> list[Any]:
        """Apply ``function`` to every item (a few in parallel), with a progress bar; results in order."""
        results: list[Any] = []
        if not items:
            return results
        with self._bar(len(items), description) as bar:
            if self.parallel_requests == 1 or len(items) == 1:
                for item in items:
                    results.append(function(item))
                    bar.update(1)
                return results
            with ThreadPoolExecutor(max_workers=self.parallel_requests) as pool:
                for result in pool.map(function, items):
                    results.append(result)
                    bar.update(1)
        return results

    def project(self, project_id: int) -> dict[str, Any]:
        """The project's JSON (``title``, ``label_config``, ``description``, ...)."""
        return self._request("GET", f"/api/projects/{int(project_id)}/")

    def _export(self, project_id: int, task_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Tasks of a project with annotations, drafts and predictions (all tasks, or just ``task_ids``)."""
        path = f"/api/projects/{int(project_id)}/export"
        base = {"exportType": "JSON", "download_all_tasks": "true"}
        if task_ids is None:
            return list(self._request("GET", path, params=base) or [])
        tasks: list[dict[str, Any]] = []
        for chunk in _chunks(list(task_ids), EXPORT_IDS_CHUNK):
            params = {**base, "ids[]": [int(task_id) for task_id in chunk]}
            tasks.extend(self._request("GET", path, params=params) or [])
        return tasks

    def _predictions(self, project_id: int) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/predictions/", params={"project": int(project_id)}) or [])

    def _model_versions(self, project_id: int) -> dict[str, int]:
        versions = self._request("GET", f"/api/projects/{int(project_id)}/model-versions/") or {}
        return {str(name): int(count or 0) for name, count in dict(versions).items()}

    def _delete_model_version(self, project_id: int, model_version: str) -> int:
        answer = self._request(
            "DELETE",
            f"/api/projects/{int(project_id)}/model-versions/",
            json={"model_version": model_version},
        )
        return int((answer or {}).get("deleted_predictions", 0))

    def _views(self, project_id: int) -> list[dict[str, Any]]:
        views = self._request("GET", "/api/dm/views/", params={"project": int(project_id)}) or []
        return [view for view in views if (view.get("data") or {}).get("title") == VIEW_TITLE]

    def find_review_project(self, source_project_id: int) -> dict[str, Any] | None:
        """The review project made for ``source_project_id`` (found by its description marker), or None."""
        marker = review_marker(source_project_id)
        page = 1
        while True:
            answer = self._request("GET", "/api/projects/", params={"page": page, "page_size": 100})
            results = answer.get("results", []) if isinstance(answer, dict) else list(answer or [])
            for project in results:
                if marker in (project.get("description") or ""):
                    return project
            if not isinstance(answer, dict) or not answer.get("next"):
                return None
            page += 1

    def _delete_tasks(self, project_id: int, task_ids: Sequence[int]) -> None:
        if not task_ids:
            return
        self._request(
            "POST",
            "/api/dm/actions",
            params={"id": "delete_tasks", "project": int(project_id)},
            json={"selectedItems": {"all": False, "included": [int(task_id) for task_id in task_ids]}},
        )

    # ------------------------------------------------------------------ push
    def push(
        self,
        project_id: int,
        items: Sequence[FlaggedItem],
        *,
        mode: str = "view",
        method: str = "self_influence",
        control: str | None = None,
    ) -> PushResult:
        """Send ``items`` (flagged tasks of ``project_id``) for review (modes: see the module docstring).

        Re-running with the same items changes nothing; with other items it updates what the last run made.
        """
        if mode not in QUEUE_MODES:
            raise InputError(f"queue mode must be one of {', '.join(QUEUE_MODES)}; got {mode!r}")
        items = sorted(items, key=lambda item: item.rank)
        task_ids = [item.task_id for item in items]
        if len(set(task_ids)) != len(task_ids):
            raise InputError("each task may be flagged only once per push")
        started = time.perf_counter()
        project = self.project(project_id)
        control_spec = LabelTarget.from_config(project.get("label_config") or "", control)
        unknown = sorted({item.suggested for item in items} - set(control_spec.classes))
        if unknown:
            raise InputError(
                f"suggested labels {unknown} are not choices of control {control_spec.name!r} "
                f"({', '.join(control_spec.classes)})"
            )
        if mode == "view":
            result = self._push_view(int(project_id), items, method, control_spec)
        else:
            result = self._push_project(int(project_id), project, items, control_spec)
        result.seconds = time.perf_counter() - started
        return result

    def _push_view(
        self, project_id: int, items: Sequence[FlaggedItem], method: str, control: LabelTarget
    ) -> PushResult:
        model_version = f"{MODEL_VERSION_PREFIX}{method}"
        result = PushResult(mode="view", project_id=project_id, n_flagged=len(items), url="")
        wanted = {
            item.task_id: {
                "task": item.task_id,
                "model_version": model_version,
                "score": _round_score(item.score),
                "result": control.result(item.suggested),
            }
            for item in items
        }

        existing = [p for p in self._predictions(project_id) if _is_relabel_version(p.get("model_version"))]
        keep: dict[int, dict[str, Any]] = {}
        stale: list[dict[str, Any]] = []
        for prediction in sorted(existing, key=lambda p: p["id"]):
            target = wanted.get(int(prediction["task"]))
            matches = (
                target is not None
                and int(prediction["task"]) not in keep
                and prediction.get("model_version") == target["model_version"]
                and prediction.get("result") == target["result"]
                and prediction.get("score") is not None
                and abs(float(prediction["score"]) - target["score"]) < 1e-9
                and (
                    not self.write_mislabeling
                    or abs(float(prediction.get("mislabeling") or 0.0) - target["score"]) < 1e-9
                )
            )
            if matches:
                keep[int(prediction["task"])] = prediction
            else:
                stale.append(prediction)

        # Delete stale predictions: per item, or a whole model_version in one request when that is cheaper
        # (then the kept predictions of that version are re-created).
        per_version_total: dict[str, int] = {}
        for prediction in existing:
            version = str(prediction["model_version"])
            per_version_total[version] = per_version_total.get(version, 0) + 1
        per_version_stale: dict[str, list[dict[str, Any]]] = {}
        for prediction in stale:
            per_version_stale.setdefault(str(prediction["model_version"]), []).append(prediction)
        single_deletions: list[int] = []
        for version, stale_here in per_version_stale.items():
            kept_here = [task for task, p in keep.items() if p.get("model_version") == version]
            recreate_cost = len(kept_here) * (
                SECONDS_PER_BULK_CREATED + (SECONDS_PER_MISLABELING_PATCH if self.write_mislabeling else 0.0)
            )
            bulk_cost = per_version_total[version] * SECONDS_PER_BULK_DELETED + recreate_cost
            if len(stale_here) * SECONDS_PER_ITEM_DELETE > bulk_cost:
                result.predictions_deleted += self._delete_model_version(project_id, version)
                for task in kept_here:
                    del keep[task]
                result.predictions_deleted -= len(kept_here)  # re-created below; not a net removal
            else:
                single_deletions.extend(int(p["id"]) for p in stale_here)
        self._each(
            lambda prediction_id: self._request("DELETE", f"/api/predictions/{prediction_id}/"),
            single_deletions,
            "remove stale predictions",
        )
        result.predictions_deleted += len(single_deletions)
        result.predictions_kept = len(keep)

        to_create = [payload for task, payload in wanted.items() if task not in keep]
        with self._bar(len(to_create), "push predictions") as bar:
            for chunk in _chunks(to_create, PREDICTION_IMPORT_CHUNK):
                self._request("POST", f"/api/projects/{project_id}/import/predictions", json=list(chunk))
                bar.update(len(chunk))
        result.predictions_created = len(to_create)

        if self.write_mislabeling and to_create:
            created_tasks = {payload["task"] for payload in to_create}
            fresh = [
                p
                for p in self._predictions(project_id)
                if p.get("model_version") == model_version and int(p["task"]) in created_tasks
            ]
            self._each(
                lambda p: self._request(
                    "PATCH",
                    f"/api/predictions/{p['id']}/",
                    json={"mislabeling": wanted[int(p["task"])]["score"]},
                ),
                fresh,
                "write mislabeling",
            )
            result.mislabeling_written = len(fresh)

        view_data = {
            "title": VIEW_TITLE,
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:id",
                        "operator": "in_list",
                        "type": "Number",
                        "value": [item.task_id for item in items],
                    }
                ],
            },
            "ordering": ["-tasks:predictions_score"],
        }
        views = self._views(project_id)
        if views:
            view = sorted(views, key=lambda v: v["id"])[0]
            for duplicate in views:
                if duplicate["id"] != view["id"]:
                    self._request("DELETE", f"/api/dm/views/{duplicate['id']}/")
            self._request(
                "PATCH", f"/api/dm/views/{view['id']}/", json={"project": project_id, "data": view_data}
            )
        else:
            view = self._request("POST", "/api/dm/views/", json={"project": project_id, "data": view_data})
            result.view_created = True
        result.view_id = int(view["id"])
        result.url = view_url(self.base_url, project_id, result.view_id)
        return result

    def _push_project(
        self,
        project_id: int,
        project: dict[str, Any],
        items: Sequence[FlaggedItem],
        control: LabelTarget,
    ) -> PushResult:
        result = PushResult(mode="project", project_id=project_id, n_flagged=len(items), url="")
        review = self.find_review_project(project_id)
        if review is None:
            title = review_title(project.get("title") or f"Project {project_id}")
            review = self._request(
                "POST",
                "/api/projects/",
                json={
                    "title": title,
                    "description": (
                        f"Items of project {project_id} that relabel ranks as most likely mislabeled, "
                        "in rank order. Choose the correct label; `relabel sync` copies your decisions "
                        f"back. "
                        f"{review_marker(project_id)}"
                    ),
                    "label_config": review_label_config(project.get("label_config") or ""),
                    "sampling": "Sequential sampling",
                    "show_collab_predictions": True,
                    "maximum_annotations": 1,
                },
            )
            result.review_project_created = True
        review_id = int(review["id"])
        result.review_project_id = review_id
        result.url = project_url(self.base_url, review_id)

        existing = self._export(review_id)
        touched_sources: set[int] = set()
        untouched: list[dict[str, Any]] = []
        for task in existing:
            source = (task.get("data") or {}).get("relabel_source_task")
            if task.get("annotations") or task.get("drafts"):
                if source is not None:
                    touched_sources.add(int(source))
            else:
                untouched.append(task)
        pending = [item for item in items if item.task_id not in touched_sources]
        result.already_reviewed = len(items) - len(pending)

        # The relabel fields of the wanted queue need the source tasks only where the current label is
        # unknown; the task data to copy is fetched only for the review tasks that are actually created.
        source_tasks: dict[int, dict[str, Any]] = {}
        self._fetch_source_tasks(project_id, [i.task_id for i in pending if i.current is None], source_tasks)
        wanted_meta = []
        for item in pending:
            current = item.current
            if current is None:
                current = self._current_label(source_tasks[item.task_id], control)
            wanted_meta.append(
                {
                    "relabel_source_task": item.task_id,
                    "relabel_rank": int(item.rank),
                    "relabel_score": _round_score(item.score),
                    "relabel_suggested": item.suggested,
                    "relabel_current": current,
                    "relabel_note": (
                        f"relabel rank {item.rank} (suspicion {item.score:.2f}): current label "
                        f"{current if current is not None else '(none)'}; the model suggests {item.suggested}"
                    ),
                }
            )

        def payloads(metas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
            self._fetch_source_tasks(project_id, [int(m["relabel_source_task"]) for m in metas], source_tasks)
            tasks = []
            for meta in metas:
                source_data = source_tasks[int(meta["relabel_source_task"])].get("data") or {}
                data = {key: value for key, value in source_data.items() if key not in RELABEL_DATA_KEYS}
                data.update(meta)
                task_payload: dict[str, Any] = {"data": data}
                if meta["relabel_current"] is not None:
                    task_payload["predictions"] = [
                        {
                            "model_version": CURRENT_LABEL_MODEL_VERSION,
                            "score": meta["relabel_score"],
                            "result": control.result(meta["relabel_current"]),
                        }
                    ]
                tasks.append(task_payload)
            return tasks

        # Untouched review tasks are replaced unless they already are exactly the wanted queue, in order.
        untouched_sorted = sorted(untouched, key=lambda task: int(task["id"]))
        current_queue = [
            {key: (task.get("data") or {}).get(key) for key in RELABEL_DATA_KEYS} for task in untouched_sorted
        ]
        if current_queue == wanted_meta[: len(current_queue)]:
            # The queue so far is a prefix of the wanted one: keep it and append the rest.
            result.review_tasks_kept = len(untouched_sorted)
            remainder = payloads(wanted_meta[len(current_queue) :])
            with self._bar(len(remainder), "push review tasks") as bar:
                for chunk in _chunks(remainder, TASK_IMPORT_CHUNK):
                    self._request("POST", f"/api/projects/{review_id}/import", json=list(chunk))
                    bar.update(len(chunk))
            result.review_tasks_created = len(remainder)
        else:
            wanted_tasks = payloads(wanted_meta)
            self._delete_tasks(review_id, [int(task["id"]) for task in untouched_sorted])
            result.review_tasks_removed = len(untouched_sorted)
            with self._bar(len(wanted_tasks), "push review tasks") as bar:
                for chunk in _chunks(wanted_tasks, TASK_IMPORT_CHUNK):
                    self._request("POST", f"/api/projects/{review_id}/import", json=list(chunk))
                    bar.update(len(chunk))
            result.review_tasks_created = len(wanted_tasks)
            # Net effect for tasks present before and after: report them as kept, not removed + created.
            unchanged = len(
                {json.dumps(q, sort_keys=True) for q in current_queue}
                & {json.dumps(q, sort_keys=True) for q in wanted_meta}
            )
            result.review_tasks_removed -= unchanged
            result.review_tasks_created -= unchanged
            result.review_tasks_kept = unchanged
        prefilled = any(meta["relabel_current"] is not None for meta in wanted_meta)
        if prefilled and review.get("model_version") != CURRENT_LABEL_MODEL_VERSION:
            # Label Studio pre-fills the labeling form only with predictions of the project's model_version
            # (and refuses a version that has no predictions yet), so it is set once the tasks exist.
            self._request(
                "PATCH", f"/api/projects/{review_id}/", json={"model_version": CURRENT_LABEL_MODEL_VERSION}
            )
        return result

    def _fetch_source_tasks(
        self, project_id: int, task_ids: Sequence[int], into: dict[int, dict[str, Any]]
    ) -> None:
        """Export the tasks of ``task_ids`` missing from ``into`` into it; ConnectorError if one is gone."""
        needed = [int(task_id) for task_id in task_ids if int(task_id) not in into]
        if not needed:
            return
        for task in self._export(project_id, needed):
            into[int(task["id"])] = task
        missing = [task_id for task_id in needed if task_id not in into]
        if missing:
            raise ConnectorError(
                f"tasks {missing[:10]} are not in project {project_id} any more; re-run the audit"
            )

    @staticmethod
    def _current_label(task: dict[str, Any], control: LabelTarget) -> str | None:
        """The label of the most recently updated valid annotation of an exported task (None if none)."""
        annotations = [a for a in task.get("annotations") or [] if _annotation_is_valid(a)]
        annotations.sort(key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
        for annotation in reversed(annotations):
            label = control.label_of(annotation.get("result"))
            if label is not None:
                return label
        return None

    # ------------------------------------------------------------------ sync
    def sync(self, source_project_id: int, *, control: str | None = None) -> SyncResult:
        """Copy reviewers' decisions from the review project to the source project as new annotations.

        Each review task with a valid (non-cancelled, non-empty) annotation counts as reviewed; its latest
        such annotation is the decision. The decision is added to the source task as a new annotation
        (completed by the reviewer) unless the source task already holds an annotation with a region id
        ``relabel-sync-<review annotation id>``. Existing annotations are never changed.
        """
        source_project_id = int(source_project_id)
        review = self.find_review_project(source_project_id)
        if review is None:
            raise RelabelError(
                f"project {source_project_id} has no relabel review project; run "
                f"`relabel audit --queue project --project {source_project_id}` first"
            )
        review_id = int(review["id"])
        result = SyncResult(source_project_id=source_project_id, review_project_id=review_id)
        source_project = self.project(source_project_id)
        control_spec = LabelTarget.from_config(source_project.get("label_config") or "", control)

        decisions: list[tuple[int, dict[str, Any], str, dict[str, Any]]] = []
        for task in self._export(review_id):
            data = task.get("data") or {}
            source_task = data.get("relabel_source_task")
            valid = [a for a in task.get("annotations") or [] if _annotation_is_valid(a)]
            if source_task is None or not valid:
                continue
            valid.sort(key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
            latest = valid[-1]
            label = control_spec.label_of(latest.get("result"))
            if label is None:
                continue
            result.reviewed += 1
            if label != data.get("relabel_current"):
                result.labels_changed += 1
            if label == data.get("relabel_suggested"):
                result.agreed_with_suggestion += 1
            decisions.append((int(source_task), latest, label, data))

        synced_regions: set[str] = set()
        source_ids = sorted({source for source, _, _, _ in decisions})
        for task in self._export(source_project_id, source_ids):
            for annotation in task.get("annotations") or []:
                for region in annotation.get("result") or []:
                    region_id = str(region.get("id") or "")
                    if region_id.startswith(SYNC_REGION_PREFIX):
                        synced_regions.add(region_id)

        to_add = []
        for source_task, annotation, label, _data in decisions:
            region_id = f"{SYNC_REGION_PREFIX}{annotation['id']}"
            if region_id in synced_regions:
                result.already_synced += 1
            else:
                to_add.append((source_task, annotation, label, region_id))

        def add(entry: tuple[int, dict[str, Any], str, str]) -> int:
            source_task, annotation, label, region_id = entry
            payload: dict[str, Any] = {"result": control_spec.result(label, region_id=region_id)}
            reviewer = annotation.get("completed_by")
            if isinstance(reviewer, dict):
                reviewer = reviewer.get("id")
            if reviewer is not None:
                payload["completed_by"] = int(reviewer)
            self._request("POST", f"/api/tasks/{source_task}/annotations/", json=payload)
            return source_task

        result.added_task_ids = self._each(add, to_add, "sync decisions")
        result.annotations_added = len(result.added_task_ids)
        return result

    # ------------------------------------------------------------------ undo
    def undo(self, project_id: int, *, force: bool = False) -> UndoResult:
        """Remove relabel's predictions, views and review project from ``project_id``; nothing else.

        Refuses (RelabelError) to delete a review project that holds reviewer decisions not yet synced to the
        source project, unless ``force``.
        """
        project_id = int(project_id)
        result = UndoResult(project_id=project_id)
        self.project(project_id)  # clear error for an unknown project
        review = self.find_review_project(project_id)
        if review is not None and not force:
            unsynced = self._unsynced_decisions(project_id, int(review["id"]))
            if unsynced:
                raise RelabelError(
                    f"review project {review['id']} holds {unsynced} reviewer decisions not yet copied to "
                    f"project {project_id}; run `relabel sync --project {project_id}` first "
                    "(or undo with --force)"
                )
        for version in self._model_versions(project_id):
            if _is_relabel_version(version):
                result.predictions_deleted += self._delete_model_version(project_id, version)
                result.model_versions.append(version)
        for view in self._views(project_id):
            self._request("DELETE", f"/api/dm/views/{view['id']}/")
            result.views_deleted += 1
        if review is not None:
            self._request("DELETE", f"/api/projects/{int(review['id'])}/")
            result.review_project_deleted = int(review["id"])
        return result

    def _unsynced_decisions(self, source_project_id: int, review_id: int) -> int:
        reviewed: dict[int, set[str]] = {}
        for task in self._export(review_id):
            source = (task.get("data") or {}).get("relabel_source_task")
            regions = {
                f"{SYNC_REGION_PREFIX}{a['id']}"
                for a in task.get("annotations") or []
                if _annotation_is_valid(a)
            }
            if source is not None and regions:
                reviewed.setdefault(int(source), set()).update(regions)
        if not reviewed:
            return 0
        synced: set[str] = set()
        for task in self._export(source_project_id, sorted(reviewed)):
            for annotation in task.get("annotations") or []:
                synced.update(str(region.get("id") or "") for region in annotation.get("result") or [])
        return sum(1 for regions in reviewed.values() if not regions & synced)


# ---------------------------------------------------------------------------------------------- functions


def flagged_items(
    task_ids: Sequence[int],
    scores: Sequence[float] | np.ndarray,
    suggested: Sequence[str],
    current: Sequence[str | None] | None = None,
    *,
    top: int,
) -> list[FlaggedItem]:
    """The ``top`` most suspicious items of a ranking (all items' scores are used to normalise).

    ``task_ids``, ``scores`` (higher = more suspicious), ``suggested`` and ``current`` labels are aligned, one
    per ranked item. Ties are broken by task id so the choice is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(task_ids) == len(scores) == len(suggested)) or (
        current is not None and len(current) != len(scores)
    ):
        raise InputError("task_ids, scores, suggested (and current) must have one entry per item")
    normalised = normalised_suspicion(scores)
    filled = np.where(np.isnan(scores), -np.inf, scores)
    order = sorted(range(len(scores)), key=lambda i: (-filled[i], int(task_ids[i])))
    return [
        FlaggedItem(
            task_id=int(task_ids[i]),
            rank=position + 1,
            score=float(normalised[i]),
            suggested=str(suggested[i]),
            current=None if current is None or current[i] is None else str(current[i]),
        )
        for position, i in enumerate(order[: max(0, int(top))])
    ]


def push_review_queue(
    connector: LabelStudioRequester,
    project_id: int,
    items: Sequence[FlaggedItem],
    *,
    mode: str = "view",
    method: str = "self_influence",
    control: str | None = None,
    progress: bool = False,
    write_mislabeling: bool = True,
) -> PushResult:
    """Shortcut for ``ReviewQueue(connector, ...).push(project_id, items, ...)``."""
    queue = ReviewQueue(connector, progress=progress, write_mislabeling=write_mislabeling)
    return queue.push(project_id, items, mode=mode, method=method, control=control)


def sync_review_decisions(
    connector: LabelStudioRequester,
    source_project_id: int,
    *,
    control: str | None = None,
    progress: bool = False,
) -> SyncResult:
    """Shortcut for ``ReviewQueue(connector, ...).sync(source_project_id)``."""
    return ReviewQueue(connector, progress=progress).sync(source_project_id, control=control)


def undo_relabel(
    connector: LabelStudioRequester, project_id: int, *, force: bool = False, progress: bool = False
) -> UndoResult:
    """Shortcut for ``ReviewQueue(connector, ...).undo(project_id)``."""
    return ReviewQueue(connector, progress=progress).undo(project_id, force=force)


__all__ = [
    "CURRENT_LABEL_MODEL_VERSION",
    "MODEL_VERSION_PREFIX",
    "REVIEW_TITLE_SUFFIX",
    "VIEW_TITLE",
    "FlaggedItem",
    "LabelTarget",
    "PushResult",
    "ReviewQueue",
    "SyncResult",
    "UndoResult",
    "flagged_items",
    "normalised_suspicion",
    "push_review_queue",
    "review_marker",
    "sync_review_decisions",
    "undo_relabel",
]
