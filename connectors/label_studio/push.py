"""Push: send flagged items to Label Studio as a review queue (the modes, names and the reconciliation of
a re-run are planned in :mod:`connectors.label_studio.queue_plan`; this module carries the plans out).

Everything here is additive and idempotent, and never edits or deletes a human annotation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

import connectors.label_studio.queue_plan as plan
import connectors.label_studio.reviewer_view as reviewer_view
from connectors.label_studio.annotations import counting_annotations, newest_label
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from connectors.label_studio.ledger import Entry, Ledger, new_nonce
from connectors.label_studio.owned import OwnedPredictions, nonce_marker, owned_review_project, owned_view
from connectors.label_studio.queue_plan import PushResult
from relabel.dataset import QUEUE_MODES, FlaggedItem
from relabel.errors import ConnectorError, InputError


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    ``mislabeling`` field (one request per prediction; the bulk import cannot set it). ``announce``: where
    the one line about a queue changing size goes before anything changes (default: standard error).
    """

    def __init__(
        self,
        client: LabelStudioClient,
        *,
        ledger: Ledger | None = None,
        progress: bool = False,
        write_mislabeling: bool = True,
        parallel_requests: int = plan.PARALLEL_REQUESTS,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.announce = announce if announce is not None else _to_stderr
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
        basis: str | None = None,
    ) -> PushResult:
        """Send ``items`` (flagged tasks of ``project_id``) for review (modes: see ``queue_plan``).

        ``project`` (the project's JSON), ``target`` (its parsed Choices control, for ``control``) and
        ``task_data`` (task id → data), all from the pull, save reading and parsing them again. ``basis``:
        why this many items are flagged (:func:`relabel.selection.flag_basis`), recorded with the queue
        and named in the line printed when a later push changes the queue's size.
        Re-running with the same items changes nothing; with other items it updates what the last run made.
        """
        if mode not in QUEUE_MODES:
            raise InputError(f"queue mode must be one of {', '.join(QUEUE_MODES)}; got {mode!r}")
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
            result = self._push_view(int(project_id), project, items, method, target, basis)
        else:
            result = self._push_project(int(project_id), project, items, target, dict(task_data or {}), basis)
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------------ view mode
    def _push_view(
        self,
        project_id: int,
        project: dict[str, Any],
        items: Sequence[FlaggedItem],
        method: str,
        target: ClassificationTarget,
        basis: str | None,
    ) -> PushResult:
        result = PushResult(mode="view", project_id=project_id, n_flagged=len(items), url="")
        wanted = plan.wanted_predictions(items, method, target)
        owned = OwnedPredictions(self.client, self.ledger, project_id)
        existing = owned.current()
        view_entry = owned_view(self.client, self.ledger, project_id)[0]
        if view_entry is not None:
            result.size_change = plan.size_change_line(
                f"queue of view '{plan.VIEW_TITLE}' in project {project_id}",
                view_entry.data,
                len({int(p["task"]) for p in existing}) or None,
                len(items),
                basis,
            )
        if result.size_change:
            self.announce(result.size_change)
        changes = plan.plan_predictions(
            existing, wanted, self.write_mislabeling, whole_versions=owned.whole_versions()
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
        model_version = f"{plan.MODEL_VERSION_PREFIX}{method}"
        view_id, result.view_created, entry = self._upsert_view(
            project_id, model_version, plan.queue_record(len(items), basis)
        )
        result.view_id = view_id
        if items:
            result.model_version_note = self._sort_by_suspicion(project_id, project, model_version, entry)
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

    def _sort_by_suspicion(
        self, project_id: int, project: dict[str, Any], model_version: str, entry: Entry
    ) -> str:
        """Make the tab's ordering by prediction score work: Label Studio 1.23 averages only the predictions
        of the project's ``model_version`` setting, so relabel sets it to ``model_version`` where it is unset
        (``""``/None: nothing of the user's is replaced), records that in the tab's ledger entry (``undo``
        puts ``""`` back), and leaves a version the user chose alone. Returns the one line saying so in
        that last case (else ``""``)."""
        chosen = project.get("model_version")
        if chosen == model_version:
            return ""
        if chosen:
            return (
                f"project {project_id}'s model version is {chosen!r} (set in Label Studio, left as it is), "
                f"so relabel's tab lists tasks by id and its score column is empty; set it to "
                f"{model_version!r} (project Settings → Annotation → Prelabeling) to sort the tab by "
                "suspicion"
            )
        self.client.update_project(project_id, model_version=model_version)
        project["model_version"] = model_version
        entry.data["model_version_set"] = model_version
        self.ledger.save(entry)
        return ""

    def _upsert_view(
        self, project_id: int, model_version: str, record: dict[str, Any]
    ) -> tuple[int, bool, Entry]:
        """(id of relabel's tab, whether it was created now, its ledger entry). Only the tab recorded in the
        ledger is updated; tabs a crashed run left are removed; a person's tab of the same title is left
        alone. ``record`` (the queue's size and basis) is kept in the tab's ledger entry."""
        kept, surplus = owned_view(self.client, self.ledger, project_id)
        for entry in surplus:
            self.client.delete_view(int(entry.data["object_id"]))
            self.ledger.remove(entry)
        if kept is not None:
            data = {**plan.view_data(model_version), "relabel_nonce": kept.data["nonce"]}
            self.client.update_view(int(kept.data["object_id"]), project_id, data)
            if any(kept.data.get(key) != value for key, value in record.items()):
                kept.data.update(record)
                self.ledger.save(kept)
            return int(kept.data["object_id"]), False, kept
        nonce = new_nonce()
        entry = self.ledger.add(project_id, "view", nonce=nonce, object_id=None, **record)
        view = self.client.create_view(project_id, {**plan.view_data(model_version), "relabel_nonce": nonce})
        entry.data["object_id"] = int(view["id"])
        self.ledger.save(entry)
        return int(view["id"]), True, entry

    # ------------------------------------------------------------------ project mode
    def _push_project(
        self,
        project_id: int,
        project: dict[str, Any],
        items: Sequence[FlaggedItem],
        target: ClassificationTarget,
        task_data: dict[int, dict[str, Any]],
        basis: str | None,
    ) -> PushResult:
        """Reconcile the review project with ``items`` (``queue_plan.plan_review_tasks``): after the size
        line (when the queue changes size), delete, update in place, then append."""
        result = PushResult(mode="project", project_id=project_id, n_flagged=len(items), url="")
        entry, review, result.review_project_created = self._review_project(project_id, project)
        review_id = int(review["id"])
        result.review_project_id = review_id
        result.url = self.client.browser_url(review_id)
        by_source, surplus = plan.index_review_tasks(self.client.export_tasks(review_id))
        ranked_now = sum(
            1 for task in by_source.values() if plan.relabel_fields(task)["relabel_rank"] is not None
        )
        result.size_change = plan.size_change_line(
            f"review queue of project {project_id}", entry.data, ranked_now or None, len(items), basis
        )
        if result.size_change:
            self.announce(result.size_change)
        if not entry.data.get("skip_queue_set"):  # a review project an older relabel made: set once
            self.client.update_project(review_id, skip_queue=plan.SKIP_QUEUE)
            entry.data["skip_queue_set"] = True
        reviewed = {s for s, task in by_source.items() if plan.review_task_state(task) == plan.REVIEWED}
        wanted = self._wanted_review_fields(
            project_id, items, [i for i in items if i.task_id not in reviewed], target, task_data
        )
        steps = plan.plan_review_tasks(by_source, surplus, [item.task_id for item in items], wanted)
        self.client.delete_tasks(review_id, steps.delete)
        self._update_review_tasks(review_id, steps, target)
        self._create_review_tasks(project_id, review_id, steps.create, target, task_data)
        entry.data.update(plan.queue_record(len(items), basis))
        self.ledger.save(entry)
        states = list(steps.states.values())
        result.already_reviewed, result.skipped = states.count(plan.REVIEWED), states.count(plan.SKIPPED)
        result.pending, result.review_states = states.count(plan.PENDING), steps.states
        result.review_tasks_created, result.review_tasks_updated = len(steps.create), len(steps.update)
        result.review_tasks_kept, result.review_tasks_removed = steps.unchanged, len(steps.delete)
        result.review_tasks_kept_with_work = steps.kept_with_work
        if wanted and review.get("model_version") != plan.SUGGESTION_MODEL_VERSION:
            # Label Studio pre-fills the labeling form only with predictions of the project's model_version
            # (and refuses a version that has no predictions yet), so it is set once the tasks exist.
            self.client.update_project(review_id, model_version=plan.SUGGESTION_MODEL_VERSION)
        return result

    def _wanted_review_fields(
        self,
        project_id: int,
        flagged: Sequence[FlaggedItem],
        items: Sequence[FlaggedItem],
        target: ClassificationTarget,
        task_data: dict[int, dict[str, Any]],
    ) -> dict[int, dict[str, Any]]:
        """source task → the relabel fields its review task should carry, for ``items`` (the current label
        read from the source project where the ranking does not give it; the reason block built with the
        evidence tasks' data, ``task_data`` filled with those it lacked; ``flagged``: every flagged item,
        marked ⚑ among the evidence)."""
        source_tasks = self._source_tasks(
            project_id, [item.task_id for item in items if item.current is None]
        )
        needed = sorted({int(e.item_id) for item in items for e in item.evidence} - set(task_data))
        for task_id, task in self._source_tasks(project_id, needed).items():
            task_data[task_id] = dict(task.get("data") or {})
        marked = {item.task_id for item in flagged}

        def task_url(task_id: int) -> str:
            return f"{self.client.browser_url(project_id)}?task={int(task_id)}"

        wanted = {}
        for item in items:
            current = (
                item.current
                if item.current is not None
                else newest_label(counting_annotations(source_tasks[item.task_id]), target)
            )
            reasons = reviewer_view.reasons_html(item, current, target, task_data, marked, task_url)
            wanted[item.task_id] = plan.review_task_meta(item, current, reasons)
        return wanted

    def _update_review_tasks(
        self, review_id: int, steps: plan.ReviewTaskPlan, target: ClassificationTarget
    ) -> None:
        """Write the new relabel fields of the queued tasks in place (task data and the suggestion
        prediction; the same task ids), and clear the rank of the tasks out of the queue."""
        missing: list[dict[str, Any]] = []
        suggestions: dict[int, dict[str, Any]] = {}  # the export lists prediction ids only: read them apart
        if steps.update:
            for prediction in sorted(self.client.list_predictions(review_id), key=lambda p: int(p["id"])):
                if prediction.get("model_version") == plan.SUGGESTION_MODEL_VERSION:
                    suggestions.setdefault(int(prediction["task"]), prediction)

        def update(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
            task, meta = pair
            self.client.update_task_data(int(task["id"]), {**(task.get("data") or {}), **meta})
            wanted = plan.review_task_payload(meta, {}, target)["predictions"][0]
            mine = [suggestions[int(task["id"])]] if int(task["id"]) in suggestions else []
            if not mine:
                missing.append({"task": int(task["id"]), **wanted})
            elif mine[0].get("result") != wanted["result"] or not plan.same_number(
                mine[0].get("score"), wanted.get("score")
            ):
                self.client.update_prediction(
                    int(mine[0]["id"]), result=wanted["result"], score=wanted.get("score")
                )

        self._each(update, steps.update, "update review tasks")
        if missing:
            self.client.import_predictions(review_id, missing)
        self._each(
            lambda task: self.client.update_task_data(
                int(task["id"]), {plan.REASONS_TAG_NAME: "", **task["data"], **plan.UNRANKED}
            ),
            steps.unrank,
            "clear ranks out of the queue",
        )

    def _create_review_tasks(
        self,
        project_id: int,
        review_id: int,
        metas: Sequence[dict[str, Any]],
        target: ClassificationTarget,
        task_data: dict[int, dict[str, Any]],
    ) -> None:
        """Import one review task per entry of ``metas`` (in order: appended after the existing tasks)."""
        missing_data = [
            int(m["relabel_source_task"]) for m in metas if int(m["relabel_source_task"]) not in task_data
        ]
        for task_id, task in self._source_tasks(project_id, missing_data).items():
            task_data[task_id] = dict(task.get("data") or {})
        payloads = [
            plan.review_task_payload(m, task_data[int(m["relabel_source_task"])], target) for m in metas
        ]
        with self._bar(len(payloads), "push review tasks") as bar:
            for chunk in plan.chunks(payloads, plan.TASK_IMPORT_CHUNK):
                self.client.import_tasks(review_id, chunk)
                bar.update(len(chunk))

    def _review_project(self, project_id: int, project: dict[str, Any]) -> tuple[Entry, dict[str, Any], bool]:
        """(its ledger entry, relabel's review project of ``project_id``, whether it was created now).

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
            review = self.client.get_project(int(kept.data["object_id"]))
            self._present_review_project(kept, review, project_id, project)
            return kept, review, False
        nonce = new_nonce()
        entry = self.ledger.add(
            project_id, "review_project", nonce=nonce, object_id=None, skip_queue_set=True
        )
        created = self.client.create_project(
            title=plan.review_title(project.get("title") or f"Project {project_id}"),
            description=(
                f"Items of project {project_id} that relabel ranks as most likely mislabeled, in rank order. "
                "Choose the correct label; `relabel sync` copies your decisions back. "
                f"{plan.review_marker(project_id)} {nonce_marker(nonce)}"
            ),
            label_config=reviewer_view.review_label_config(project.get("label_config") or ""),
            expert_instruction=reviewer_view.instructions(project_id),
            show_instruction=True,
            sampling="Sequential sampling",
            show_collab_predictions=True,
            maximum_annotations=1,
            skip_queue=plan.SKIP_QUEUE,
        )
        entry.data.update(object_id=int(created["id"]), object_created_at=created.get("created_at"))
        self.ledger.save(entry)
        self._present_review_project(entry, created, project_id, project)
        return entry, created, True

    def _present_review_project(
        self, entry: Entry, review: dict[str, Any], project_id: int, project: dict[str, Any]
    ) -> None:
        """Bring what a reviewer sees in relabel's review project up to date: the labeling config (the
        source's with the reason block, built again when the project predates the block), the instructions
        and relabel's Data Manager tab (its id kept in the review project's ledger entry)."""
        review_id = int(review["id"])
        changes: dict[str, Any] = {}
        if f'name="{reviewer_view.REASONS_TAG_NAME}"' not in str(review.get("label_config") or ""):
            changes["label_config"] = reviewer_view.review_label_config(project.get("label_config") or "")
        if review.get("expert_instruction") != reviewer_view.instructions(project_id) or not review.get(
            "show_instruction"
        ):
            changes.update(expert_instruction=reviewer_view.instructions(project_id), show_instruction=True)
        if changes:
            self.client.update_project(review_id, **changes)
            review.update(changes)
        tab = reviewer_view.review_tab_data(plan.RELABEL_FIELD_KEYS)
        tab_id = entry.data.get("tab_id")
        if tab_id is not None and int(tab_id) in {int(v["id"]) for v in self.client.list_views(review_id)}:
            self.client.update_view(int(tab_id), review_id, tab)
            return
        entry.data["tab_id"] = int(self.client.create_view(review_id, tab)["id"])
        self.ledger.save(entry)

    def _source_tasks(self, project_id: int, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The exported source tasks of ``task_ids``; ConnectorError if one is gone."""
        if not task_ids:
            return {}
        found = {int(task["id"]): task for task in self.client.export_tasks(project_id, task_ids)}
        missing = [int(task_id) for task_id in task_ids if int(task_id) not in found]
        if missing:
            raise ConnectorError(
                f"tasks {missing[:10]} are not in project {project_id} any more; re-run the audit"
            )
        return found
