"""Helpers that put projects, tasks and annotations into a real (test) Label Studio server.

They talk plain HTTP with the server's legacy admin token, the way a user's script would, so tests of the
connector exercise the real server and not a mock. Every helper raises AssertionError with the server's
answer when Label Studio refuses a request (a seeding failure must fail the test, loudly).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import requests

from scripts.local_label_studio import LocalLabelStudio

REQUEST_TIMEOUT_SECONDS = 600


def _headers(server: LocalLabelStudio) -> dict[str, str]:
    return {"Authorization": f"Token {server.legacy_token}"}


def _check(response: requests.Response, what: str) -> Any:
    assert response.status_code < 300, f"{what} failed: HTTP {response.status_code}: {response.text[:500]}"
    return response.json() if response.content else None


def choices_block(
    control_name: str, to_name: str, choices: Sequence[str], choice_mode: str = "single"
) -> str:
    """The ``<Choices>`` XML of a labeling config with one ``<Choice>`` per entry of ``choices``."""
    options = "".join(f"<Choice value={quoteattr(choice)}/>" for choice in choices)
    return (
        f"<Choices name={quoteattr(control_name)} toName={quoteattr(to_name)} "
        f"choice={quoteattr(choice_mode)}>{options}</Choices>"
    )


def text_classification_config(
    choices: Sequence[str], control_name: str = "label", object_name: str = "text", value_key: str = "text"
) -> str:
    """Labeling config: one ``<Text>`` showing ``$value_key`` and one single-choice ``<Choices>``."""
    return (
        f'<View><Text name="{object_name}" value="${value_key}"/>'
        f"{choices_block(control_name, object_name, choices)}</View>"
    )


def image_classification_config(
    choices: Sequence[str], control_name: str = "label", object_name: str = "image", value_key: str = "image"
) -> str:
    """Labeling config: one ``<Image>`` showing ``$value_key`` and one single-choice ``<Choices>``."""
    return (
        f'<View><Image name="{object_name}" value="${value_key}"/>'
        f"{choices_block(control_name, object_name, choices)}</View>"
    )


def tabular_classification_config(
    choices: Sequence[str], control_name: str = "label", object_name: str = "row", value_key: str = "row"
) -> str:
    """Labeling config for numeric rows: a ``<Table>`` showing ``$value_key`` (a dict of column -> number)."""
    return (
        f'<View><Table name="{object_name}" value="${value_key}"/>'
        f"{choices_block(control_name, object_name, choices)}</View>"
    )


def choice_result(label: str, control_name: str = "label", object_name: str = "text") -> list[dict[str, Any]]:
    """The ``result`` list of an annotation that picks ``label`` in the given Choices control."""
    return [
        {
            "from_name": control_name,
            "to_name": object_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def choice_annotation(
    label: str, control_name: str = "label", object_name: str = "text", cancelled: bool = False
) -> dict[str, Any]:
    """An annotation as Label Studio's import accepts it; ``cancelled=True`` makes it a skipped one."""
    return {
        "result": [] if cancelled else choice_result(label, control_name, object_name),
        "was_cancelled": cancelled,
    }


def create_project(server: LocalLabelStudio, label_config: str, title: str = "relabel test project") -> int:
    """Create a project with ``label_config``; returns its id."""
    response = requests.post(
        f"{server.url}/api/projects",
        headers=_headers(server),
        json={"title": title, "label_config": label_config},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return int(_check(response, "creating a project")["id"])


def import_tasks(server: LocalLabelStudio, project_id: int, tasks: Iterable[dict[str, Any]]) -> list[int]:
    """Import tasks (``{"data": {...}, "annotations": [...]}``) in one bulk call; returns the new task ids."""
    response = requests.post(
        f"{server.url}/api/projects/{project_id}/import",
        params={"return_task_ids": "true"},
        headers=_headers(server),
        json=list(tasks),
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    body = _check(response, "importing tasks")
    return [int(task_id) for task_id in body.get("task_ids", [])]


def upload_files(
    server: LocalLabelStudio, project_id: int, files: Sequence[tuple[str, bytes, str]]
) -> list[int]:
    """Upload files (``(filename, content, mime type)``) the way the UI's import dialog does (multipart).

    Each file becomes one task whose data points at ``/data/upload/<project>/<name>``. Returns the task ids.
    """
    # One form field per file: Label Studio reads request.FILES as a dict, so repeated names collapse to one.
    multipart = [
        (f"file{position}", (name, io.BytesIO(content), mime))
        for position, (name, content, mime) in enumerate(files)
    ]
    response = requests.post(
        f"{server.url}/api/projects/{project_id}/import",
        params={"return_task_ids": "true"},
        headers=_headers(server),
        files=multipart,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    body = _check(response, "uploading files")
    return [int(task_id) for task_id in body.get("task_ids", [])]


def annotate(
    server: LocalLabelStudio, task_id: int, result: list[dict[str, Any]], cancelled: bool = False
) -> int:
    """Add an annotation to an existing task (as the admin); returns the annotation id."""
    response = requests.post(
        f"{server.url}/api/tasks/{task_id}/annotations/",
        headers=_headers(server),
        json={"result": result, "was_cancelled": cancelled},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return int(_check(response, f"annotating task {task_id}")["id"])


def touch_annotation(server: LocalLabelStudio, annotation_id: int, result: list[dict[str, Any]]) -> None:
    """Re-save an annotation with ``result``; Label Studio bumps its ``updated_at`` to now."""
    response = requests.patch(
        f"{server.url}/api/annotations/{annotation_id}/",
        headers=_headers(server),
        json={"result": result},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    _check(response, f"updating annotation {annotation_id}")


def create_draft(server: LocalLabelStudio, task_id: int, result: list[dict[str, Any]]) -> int:
    """Save an unsubmitted draft on a task (what the UI autosaves); returns the draft id."""
    response = requests.post(
        f"{server.url}/api/tasks/{task_id}/drafts",
        headers=_headers(server),
        json={"result": result, "lead_time": 1.0},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return int(_check(response, f"creating a draft on task {task_id}")["id"])


def get_json(server: LocalLabelStudio, path: str, **params: Any) -> Any:
    """GET ``path`` on the server with the legacy token; asserts HTTP 200 and returns the JSON body."""
    response = requests.get(
        f"{server.url}{path}", params=params, headers=_headers(server), timeout=REQUEST_TIMEOUT_SECONDS
    )
    assert response.status_code == 200, response.text[:300]
    return response.json()


def export_tasks(server: LocalLabelStudio, project_id: int) -> list[dict[str, Any]]:
    """All tasks of a project as Label Studio's JSON export gives them (for assertions)."""
    response = requests.get(
        f"{server.url}/api/projects/{project_id}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
        headers=_headers(server),
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    return list(_check(response, f"exporting project {project_id}"))


def text_tasks(texts: Sequence[str], labels: Sequence[str | None], control_name: str = "label") -> list[dict]:
    """Tasks with ``data.text`` and one annotation each (no annotation where the label is None)."""
    tasks = []
    for text, label in zip(texts, labels, strict=True):
        annotations = [] if label is None else [choice_annotation(label, control_name, "text")]
        tasks.append({"data": {"text": text}, "annotations": annotations})
    return tasks
