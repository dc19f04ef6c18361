"""Push: send flagged items to Label Studio as a review queue (the modes, names and the reconciliation of
a re-run are planned in :mod:`connectors.label_studio.queue_plan`; this module carries the plans out).

Everything here is additive and idempotent, and never edits or deletes a human annotation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

import connectors.label_studio.queue_plan as plan
from connectors.label_studio.annotations import counting_annotations, newest_label
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from connectors.label_studio.ledger import Ledger, new_nonce
from connectors.label_studio.owned import OwnedPredictions, nonce_marker, owned_review_project, owned_view
from connectors.label_studio.queue_plan import PushResult
from relabel.dataset import FlaggedItem
from relabel.errors import ConnectorError, InputError


def run_each(
    function: Callable[[Any], Any], items: Sequence[Any], description: str, progress: bool, workers: int
) -> list[Any]:
    """``function`` applied to every item (``workers`` requests at once), with a progress bar; in order."""
    if not items:
        return []
    with tqdm(total=len(items), desc=description, unit="item", disable=not progress, leave=False) as bar:
        if workers <= 1 or len(items) == 1:
            results = []
            for item in items:
                results.append(function(item))
                bar.update(1)
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = []
            for result in pool.map(function, items):
                results.append(result)
                bar.update(1)
            return results


class ReviewQueue:
    """Push relabel's review queue to one Label Studio server.

    Everything it updates or deletes is recorded in relabel's ledger (``ledger``); the caller holds the
    project's write lease (:meth:`connectors.label_studio.ledger.Ledger.lease`).

    ``progress``: tqdm bars for the long passes. ``write_mislabeling``: also write each new prediction's
    ``mislabeling`` field (one request per prediction; the bulk import cannot set it).
    """

    def __init__(
        self,
        client: LabelStudioClient,
        *,
        ledger: Ledger | None = None,
        progress: bool = False,
        write_mislabeling: bool = True,
        parallel_requests: int = plan.PARALLEL_REQUESTS,
    ) -> None:
        self.client = client
        self.ledger = ledger if ledger is not None else Ledger(client)
        self.progress = progress
        self.write_mislabeling = write_mislabeling
        self.parallel_requests = max(1, int(parallel_requests))

    def _each(self, function: Callable[[Any], Any], items: Sequence[Any], description: str) -> list[Any]:
        return run_each(function, items, description, self.progress, self.parallel_requests)

    def _bar(self, total: int, description: str) -> tqdm:
        return tqdm(total=total, desc=description, unit="item", disable=not self.progress, leave=False)

    def push(
        self,
        project_id: int,
        items: Sequence[FlaggedItem],
        *,
        mode: str = "view",
        method: str = "self_influence",
        control: str | None = None,
        project: dict[str, Any] | None = None,
        target: ClassificationTarget | None = None,
        task_data: dict[int, dict[str, Any]] | None = None,
    ) -> PushResult:
        """Send ``items`` (flagged tasks of ``project_id``) for review (modes: see ``queue_plan``).

        ``project`` (the project's JSON), ``target`` (its parsed Choices control, for ``control``) and
        ``task_data`` (task id → data), all from the pull, save reading and parsing them again.
        Re-running with the same items changes nothing; with other items it updates what the last run made.
        """
        if mode not in plan.QUEUE_MODES:
            raise InputError(f"queue mode must be one of {', '.join(plan.QUEUE_MODES)}; got {mode!r}")
        items = sorted(items, key=lambda item: item.rank)
        task_ids = [item.task_id for item in items]
        if len(set(task_ids)) != len(task_ids):
            raise InputError("each task may be flagged only once per push")
        started = time.perf_counter()
        project = project if project is not None else self.client.get_project(project_id)
        if target is None:
            config = parse_labeling_config(str(project.get("label_config") or ""))
            target = config.classification_target(control)
        unknown = sorted({item.suggested for item in items} - set(target.classes))
        if unknown:
            raise InputError(
                f"suggested labels {unknown} are not choices of control {target.control.name!r} "
                f"({', '.join(target.classes)})"
            )
        if mode == "view":
            result = self._push_view(int(project_id), items, method, target)
        else:
            result = self._push_project(int(project_id), project, items, target, dict(task_data or {}))
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------------ view mode
    def _push_view(
        self, project_id: int, items: Sequence[FlaggedItem], method: str, target: ClassificationTarget
    ) -> PushResult:
        result = PushResult(mode="view", project_id=project_id, n_flagged=len(items), url="")
        wanted = plan.wanted_predictions(items, method, target)
        owned = OwnedPredictions(self.client, self.ledger, project_id)
        changes = plan.plan_predictions(
            owned.current(), wanted, self.write_mislabeling, whole_versions=owned.whole_versions()
        )
        for version in changes.delete_versions:
            result.predictions_deleted += self.client.delete_model_version(project_id, version)
        owned.forget(versions=changes.delete_versions)
        result.predictions_deleted -= changes.recreated  # re-created below: not a net removal
        self._each(self.client.delete_prediction, changes.delete_ids, "remove stale predictions")
        owned.forget(prediction_ids=changes.delete_ids)
        result.predictions_deleted += len(changes.delete_ids)
        result.predictions_kept = len(changes.keep)
        versions = sorted({payload["model_version"] for payload in changes.create})
        created_tasks = [payload["task"] for payload in changes.create]
        with (
            owned.importing(versions, created_tasks),
            self._bar(len(changes.create), "push predictions") as bar,
        ):
            for chunk in plan.chunks(changes.create, plan.PREDICTION_IMPORT_CHUNK):
                self.client.import_predictions(project_id, chunk)
                bar.update(len(chunk))
        result.predictions_created = len(changes.create)
        if self.write_mislabeling and changes.create:
            result.mislabeling_written = self._write_mislabeling(owned, wanted, changes.create)
        view_id, result.view_created = self._upsert_view(project_id, f"{plan.MODEL_VERSION_PREFIX}{method}")
        result.view_id = view_id
        result.url = self.client.browser_url(project_id, view_id)
        return result

    def _write_mislabeling(
        self, owned: OwnedPredictions, wanted: dict[int, dict[str, Any]], created: Sequence[dict[str, Any]]
    ) -> int:
        created_tasks = {int(payload["task"]) for payload in created}
        fresh = [p for p in owned.current() if int(p["task"]) in created_tasks]
        self._each(
            lambda p: self.client.update_prediction(
                int(p["id"]), mislabeling=wanted[int(p["task"])]["mislabeling"]
            ),
            fresh,
            "write mislabeling",
        )
        return len(fresh)

    def _upsert_view(self, project_id: int, model_version: str) -> tuple[int, bool]:
        """(id of relabel's tab, whether it was created now). Only the tab recorded in the ledger is
        updated; tabs a crashed run left are removed; a person's tab of the same title is left alone."""
        kept, surplus = owned_view(self.client, self.ledger, project_id)
        for entry in surplus:
            self.client.delete_view(int(entry.data["object_id"]))
            self.ledger.remove(entry)
        if kept is not None:
            data = {**plan.view_data(model_version), "relabel_nonce": kept.data["nonce"]}
            self.client.update_view(int(kept.data["object_id"]), project_id, data)
            return int(kept.data["object_id"]), False
        nonce = new_nonce()
        entry = self.ledger.add(project_id, "view", nonce=nonce, object_id=None)
        view = self.client.create_view(project_id, {**plan.view_data(model_version), "relabel_nonce": nonce})
        entry.data["object_id"] = int(view["id"])
        self.ledger.save(entry)
        return int(view["id"]), True

    # ------------------------------------------------------------------ project mode
    def _push_project(
        self,
        project_id: int,
        project: dict[str, Any],
        items: Sequence[FlaggedItem],
        target: ClassificationTarget,
        task_data: dict[int, dict[str, Any]],
    ) -> PushResult:
        result = PushResult(mode="project", project_id=project_id, n_flagged=len(items), url="")
        review, result.review_project_created = self._review_project(project_id, project)
        review_id = int(review["id"])
        result.review_project_id = review_id
        result.url = self.client.browser_url(review_id)

        touched, untouched = plan.review_queue_state(self.client.export_tasks(review_id))
        pending = [item for item in items if item.task_id not in touched]
        result.already_reviewed = len(items) - len(pending)
        unknown_current = [item.task_id for item in pending if item.current is None]
        source_tasks = self._source_tasks(project_id, unknown_current)
        wanted = [
            plan.review_task_meta(
                item,
                item.current
                if item.current is not None
                else newest_label(counting_annotations(source_tasks[item.task_id]), target),
            )
            for item in pending
        ]
        steps = plan.plan_review_tasks(touched, untouched, wanted)
        self.client.delete_tasks(review_id, steps.delete)
        missing_data = [
            int(m["relabel_source_task"])
            for m in steps.create
            if int(m["relabel_source_task"]) not in task_data
        ]
        for task_id, task in self._source_tasks(project_id, missing_data).items():
            task_data[task_id] = dict(task.get("data") or {})
        payloads = [
            plan.review_task_payload(m, task_data[int(m["relabel_source_task"])], target)
            for m in steps.create
        ]
        with self._bar(len(payloads), "push review tasks") as bar:
            for chunk in plan.chunks(payloads, plan.TASK_IMPORT_CHUNK):
                self.client.import_tasks(review_id, chunk)
                bar.update(len(chunk))
        result.review_tasks_removed = len(steps.delete) - steps.unchanged
        result.review_tasks_created = len(steps.create) - steps.unchanged
        result.review_tasks_kept = steps.kept + steps.unchanged
        if wanted and review.get("model_version") != plan.SUGGESTION_MODEL_VERSION:
            # Label Studio pre-fills the labeling form only with predictions of the project's model_version
            # (and refuses a version that has no predictions yet), so it is set once the tasks exist.
            self.client.update_project(review_id, model_version=plan.SUGGESTION_MODEL_VERSION)
        return result

    def _review_project(self, project_id: int, project: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(relabel's review project of ``project_id``, whether it was created now).

        Only the review project recorded in the ledger counts; an extra one a crashed run left is deleted
        when nobody has worked in it yet.
        """
        kept, surplus = owned_review_project(self.client, self.ledger, project_id)
        for entry in surplus:
            extra = int(entry.data["object_id"])
            tasks = self.client.export_tasks(extra)
            if not any(task.get("annotations") or task.get("drafts") for task in tasks):
                self.client.delete_project(extra)
                self.ledger.remove(entry)
        if kept is not None:
            return self.client.get_project(int(kept.data["object_id"])), False
        nonce = new_nonce()
        entry = self.ledger.add(project_id, "review_project", nonce=nonce, object_id=None)
        created = self.client.create_project(
            title=plan.review_title(project.get("title") or f"Project {project_id}"),
            description=(
                f"Items of project {project_id} that relabel ranks as most likely mislabeled, in rank order. "
                "Choose the correct label; `relabel sync` copies your decisions back. "
                f"{plan.review_marker(project_id)} {nonce_marker(nonce)}"
            ),
            label_config=plan.review_label_config(project.get("label_config") or ""),
            sampling="Sequential sampling",
            show_collab_predictions=True,
            maximum_annotations=1,
        )
        entry.data.update(object_id=int(created["id"]), object_created_at=created.get("created_at"))
        self.ledger.save(entry)
        return created, True

    def _source_tasks(self, project_id: int, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The exported source tasks of ``task_ids``; ConnectorError if one is gone."""
        if not task_ids:
            return {}
        found = {int(task["id"]): task for task in self.client.export_tasks(project_id, task_ids)}
        missing = [task_id for task_id in task_ids if int(task_id) not in found]
        if missing:
            raise ConnectorError(
                f"tasks {missing[:10]} are not in project {project_id} any more; re-run the audit"
            )
        return found
