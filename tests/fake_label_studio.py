"""An in-memory Label Studio that implements :class:`connectors.label_studio.LabelStudioClient`'s methods.

It keeps projects, tasks (with annotations, drafts and predictions), Data Manager views and users in dicts
and answers the way a Label Studio 1.23 server does for what relabel uses (import order gives ascending ids,
deleting a model version deletes its predictions, an export lists drafts apart from annotations, ...). It
lets the pipeline, the queue planning, sync and undo run in milliseconds; every behaviour it imitates is
also tested against the real server in the other test files.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from connectors.label_studio.client import LABEL_STUDIO_DATETIME_FORMAT
from relabel.errors import ConnectorError, NotFoundError

ADMIN_ID = 1


class FakeLabelStudioClient:
    """The fake server; ``calls`` counts the operations made, by method name."""

    def __init__(self, url: str = "http://fake-label-studio.test") -> None:
        self.url = url
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.views: dict[int, dict[str, Any]] = {}
        self.users = {ADMIN_ID: "admin@example.com"}
        self.calls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _now(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.isoformat()

    def _project(self, project_id: int) -> dict[str, Any]:
        if int(project_id) not in self.projects:
            raise NotFoundError(f"Label Studio at {self.url} has no project with id {project_id}")
        return self.projects[int(project_id)]

    def _task(self, task_id: int) -> dict[str, Any]:
        if int(task_id) not in self.tasks:
            raise ConnectorError(f"Label Studio at {self.url} answered with 404: no task {task_id}")
        return self.tasks[int(task_id)]

    def _tasks_of(self, project_id: int) -> list[dict[str, Any]]:
        return [task for task in self.tasks.values() if task["project"] == int(project_id)]

    def _predictions(self) -> list[dict[str, Any]]:
        return [prediction for task in self.tasks.values() for prediction in task["predictions"]]

    def add_annotation(
        self, task_id: int, result: list[dict[str, Any]], *, cancelled: bool = False, user: int = ADMIN_ID
    ) -> dict[str, Any]:
        """A person's annotation (what a reviewer or annotator saves in the browser)."""
        task = self._task(task_id)
        stamp = self._now()
        annotation = {
            "id": next(self._ids),
            "task": int(task_id),
            "result": copy.deepcopy(result),
            "was_cancelled": cancelled,
            "completed_by": user,
            "created_at": stamp,
            "updated_at": stamp,
        }
        task["annotations"].append(annotation)
        task["updated_at"] = stamp
        return annotation

    # ------------------------------------------------------------------ projects
    def get_project(self, project_id: int) -> dict[str, Any]:
        self._count("get_project")
        project = copy.deepcopy(self._project(project_id))
        project["task_number"] = len(self._tasks_of(project_id))
        return project

    def list_projects(self) -> list[dict[str, Any]]:
        self._count("list_projects")
        return [copy.deepcopy(project) for project in self.projects.values()]

    def create_project(self, **fields: Any) -> dict[str, Any]:
        self._count("create_project")
        project = {
            "id": next(self._ids),
            "title": "",
            "description": "",
            "model_version": "",
            "created_at": self._now(),
            **fields,
        }
        self.projects[project["id"]] = project
        return copy.deepcopy(project)

    def update_project(self, project_id: int, **fields: Any) -> None:
        self._count("update_project")
        self._project(project_id).update(fields)

    def delete_project(self, project_id: int) -> None:
        self._count("delete_project")
        self._project(project_id)
        del self.projects[int(project_id)]
        for task in self._tasks_of(project_id):
            del self.tasks[task["id"]]

    def server_time_and_task_count(self, project_id: int) -> tuple[str | None, int | None]:
        self._count("server_time_and_task_count")
        return self._clock.strftime(LABEL_STUDIO_DATETIME_FORMAT), len(self._tasks_of(project_id))

    def project_counts(self, project_id: int) -> tuple[str | None, tuple[int | None, ...]]:
        self._count("project_counts")
        tasks = self._tasks_of(project_id)
        annotations = [a for task in tasks for a in task["annotations"]]
        skipped = sum(1 for a in annotations if a.get("was_cancelled"))
        moment = self._clock.strftime(LABEL_STUDIO_DATETIME_FORMAT)
        return moment, (len(tasks), len(annotations) - skipped, skipped)

    def server_now(self, project_id: int) -> datetime:
        return self._clock

    # ------------------------------------------------------------------ tasks
    def export_tasks(
        self, project_id: int, task_ids: Sequence[int] | None = None, progress: bool = False
    ) -> list[dict[str, Any]]:
        self._count("export_tasks")
        self._project(project_id)
        wanted = None if task_ids is None else {int(task_id) for task_id in task_ids}
        tasks = [t for t in self._tasks_of(project_id) if wanted is None or t["id"] in wanted]
        return [copy.deepcopy(task) for task in sorted(tasks, key=lambda t: t["id"])]

    def list_tasks(self, project_id: int, progress: bool = False) -> list[dict[str, Any]]:
        return self.export_tasks(project_id)

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        self._count("import_tasks")
        self._project(project_id)
        created = []
        for payload in tasks:
            stamp = self._now()
            task_id = next(self._ids)
            task = {
                "id": task_id,
                "project": int(project_id),
                "data": copy.deepcopy(payload["data"]),
                "annotations": [],
                "drafts": [],
                "predictions": [],
                "created_at": stamp,
                "updated_at": stamp,
            }
            self.tasks[task_id] = task
            created.append(task_id)
            for annotation in payload.get("annotations", []):
                self.add_annotation(task_id, annotation["result"])
            self.import_predictions(
                project_id, [{**p, "task": task_id} for p in payload.get("predictions", [])]
            )
        return created

    def update_task_data(self, task_id: int, data: dict[str, Any]) -> None:
        self._count("update_task_data")
        self._task(task_id)["data"] = copy.deepcopy(data)

    def delete_tasks(self, project_id: int, task_ids: Sequence[int]) -> None:
        self._count("delete_tasks")
        for task_id in task_ids:
            if self._task(task_id)["project"] == int(project_id):
                del self.tasks[int(task_id)]

    def tasks_updated_after(self, project_id: int, moment: str, limit: int = 1000) -> list[int] | None:
        self._count("tasks_updated_after")
        threshold = datetime.strptime(moment, LABEL_STUDIO_DATETIME_FORMAT).replace(tzinfo=UTC)
        changed = [
            t["id"] for t in self._tasks_of(project_id) if datetime.fromisoformat(t["updated_at"]) > threshold
        ]
        return None if len(changed) > limit else sorted(changed)

    # ------------------------------------------------------------------ predictions
    def list_predictions(self, project_id: int) -> list[dict[str, Any]]:
        self._count("list_predictions")
        return [copy.deepcopy(p) for task in self._tasks_of(project_id) for p in task["predictions"]]

    def import_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]]) -> None:
        self._count("import_predictions")
        for payload in predictions:
            task = self._task(payload["task"])
            prediction = {
                "created_at": self._now(),
                "mislabeling": 0.0,
                **copy.deepcopy(payload),
                "id": next(self._ids),
                "project": task["project"],
            }
            task["predictions"].append(prediction)
            task["updated_at"] = self._now()

    def update_prediction(self, prediction_id: int, **fields: Any) -> None:
        self._count("update_prediction")
        next(p for p in self._predictions() if p["id"] == int(prediction_id)).update(fields)

    def delete_prediction(self, prediction_id: int) -> None:
        self._count("delete_prediction")
        for task in self.tasks.values():
            task["predictions"] = [p for p in task["predictions"] if p["id"] != int(prediction_id)]

    def model_versions(self, project_id: int) -> dict[str, int]:
        self._count("model_versions")
        counts: dict[str, int] = {}
        for prediction in self.list_predictions(project_id):
            counts[prediction["model_version"]] = counts.get(prediction["model_version"], 0) + 1
        return counts

    def delete_model_version(self, project_id: int, model_version: str) -> int:
        self._count("delete_model_version")
        deleted = 0
        for task in self._tasks_of(project_id):
            kept = [p for p in task["predictions"] if p["model_version"] != model_version]
            deleted += len(task["predictions"]) - len(kept)
            task["predictions"] = kept
        return deleted

    # ------------------------------------------------------------------ views
    def list_views(self, project_id: int) -> list[dict[str, Any]]:
        self._count("list_views")
        return [copy.deepcopy(v) for v in self.views.values() if v["project"] == int(project_id)]

    def create_view(self, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        self._count("create_view")
        view = {"id": next(self._ids), "project": int(project_id), "data": copy.deepcopy(data)}
        self.views[view["id"]] = view
        return copy.deepcopy(view)

    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> None:
        self._count("update_view")
        self.views[int(view_id)].update(project=int(project_id), data=copy.deepcopy(data))

    def delete_view(self, view_id: int) -> None:
        self._count("delete_view")
        del self.views[int(view_id)]

    # ------------------------------------------------------------------ annotations, users, files
    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], completed_by: int | None
    ) -> dict[str, Any]:
        self._count("create_annotation")
        return copy.deepcopy(self.add_annotation(task_id, result, user=completed_by or ADMIN_ID))

    def delete_annotation(self, annotation_id: int) -> None:
        self._count("delete_annotation")
        for task in self.tasks.values():
            task["annotations"] = [a for a in task["annotations"] if a["id"] != int(annotation_id)]

    def user_emails(self) -> dict[int, str]:
        return dict(self.users)

    def is_on_server(self, url: str) -> bool:
        return url.startswith(self.url)

    def absolute_url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else f"{self.url}/{path_or_url.lstrip('/')}"

    def download_file(self, path_or_url: str, anonymous: requests.Session) -> tuple[int, bytes]:
        return 404, b""

    def browser_url(self, project_id: int, view_id: int | None = None) -> str:
        url = f"{self.url}/projects/{int(project_id)}/data"
        return url if view_id is None else f"{url}?tab={int(view_id)}"

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError("the fake answers the named operations only")
