"""Pull: a Label Studio classification project → a :class:`relabel.dataset.LabeledDataset`.

Which control holds the label and which input kind it labels: :mod:`connectors.label_studio.config`.
Which annotations count and which label wins: :mod:`connectors.label_studio.annotations` (cancelled ones
and drafts do not count; several annotators → majority, ties to the newest, ``disagreement`` recorded).
Tasks without a usable annotation go to ``unlabeled_ids``.

Inputs: text → ``list[str]`` (``task.data[<value key>]``; HyperText: the raw HTML); image → ``list[bytes]``
(the file the task's URL points at: Label Studio uploads are fetched with the token, other hosts without
it, ``data:`` URIs decoded); tabular → a numeric DataFrame (``task.data[<value key>]`` as a dict of column
→ number, else every top-level task-data field that is numeric in all labeled tasks).

Reading speed, measured with ``scripts/bench_connector.py`` (local LS 1.23.2, SQLite, a shared 2-core box
under load 5-8; text tasks with one annotation each), seconds per pull:

========  ========  ========
n_tasks   export    list
========  ========  ========
1,000     5.4       10.9
10,000    48.0      132.2
20,000    115.5     282.4
========  ========  ========

so ``"export"`` (one request) is the default. Both are bound by the server (~2 SQL queries per task in its
export serializer); the client-side work of a 20,000-task pull is ~1.8 s.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import requests
from tqdm.auto import tqdm

from connectors.label_studio.annotations import majority_label
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from relabel.dataset import LabeledDataset
from relabel.errors import ConnectorError

PullMethod = Literal["export", "list"]
IMAGE_FETCH_WORKERS = 8
PROVENANCE_COLUMNS = ["annotation_id", "annotator", "updated_at", "n_annotations", "disagreement"]


@dataclass
class PulledProject:
    """One pull: the dataset, the project's JSON, the classification target, and every task's ``data``
    (task id → data dict; what a review project copies, so a push need not export the tasks again)."""

    dataset: LabeledDataset
    project: dict[str, Any]
    target: ClassificationTarget
    task_data: dict[int, dict[str, Any]]


def fetch_tasks(
    client: LabelStudioClient, project_id: int, method: PullMethod = "export", progress: bool = False
) -> list[dict[str, Any]]:
    """Every task of the project with its annotations (``export``: one request; ``list``: pages)."""
    if method == "export":
        return client.export_tasks(project_id, progress=progress)
    if method == "list":
        return client.list_tasks(project_id, progress=progress)
    raise ConnectorError(f"Unknown pull method {method!r}; use 'export' or 'list'")


def pull_project(
    client: LabelStudioClient,
    project_id: int,
    control: str | None = None,
    progress: bool = False,
    method: PullMethod = "export",
) -> PulledProject:
    """Pull the project's labeled tasks (items sorted by task id); see the module docstring.

    Raises ConnectorError for an unreachable server, a rejected token, an unknown project, an unsupported
    config, a label that is not in the config's choices (naming task and label), task data that lacks the
    input field, and an image that cannot be fetched (naming the task).
    """
    project = client.get_project(project_id)
    target = parse_labeling_config(str(project.get("label_config", ""))).classification_target(control)
    tasks = sorted(fetch_tasks(client, project_id, method, progress), key=lambda task: int(task["id"]))
    emails = client.user_emails()
    known = set(target.classes)
    labeled: list[dict[str, Any]] = []
    labels: list[str] = []
    rows: list[dict[str, Any]] = []
    unlabeled_ids: list[int] = []
    for task in tasks:
        decision = majority_label(task, target)
        if decision is None:
            unlabeled_ids.append(int(task["id"]))
            continue
        if decision.label not in known:
            raise ConnectorError(
                f"Task {task['id']} of project {project_id} is labeled {decision.label!r}, which is not a "
                f"<Choice> of control {target.control.name!r} ({', '.join(target.classes)}); add it to the "
                "labeling config or fix the annotation"
            )
        labeled.append(task)
        labels.append(decision.label)
        rows.append(
            {
                "annotation_id": int(decision.annotation["id"]),
                "annotator": _annotator(decision.annotation.get("completed_by"), emails),
                "updated_at": pd.Timestamp(decision.annotation.get("updated_at") or pd.NaT),
                "n_annotations": decision.n_annotations,
                "disagreement": decision.disagreement,
            }
        )
    ids = np.array([int(task["id"]) for task in labeled], dtype=np.int64)
    dataset = LabeledDataset(
        ids=ids,
        inputs=_inputs(client, target, labeled, progress),
        kind=target.kind,
        labels=np.array(labels, dtype=object),
        classes=target.classes,
        provenance=_provenance(rows, ids),
        unlabeled_ids=unlabeled_ids,
        source={
            "type": "label_studio",
            "url": client.url,
            "project_id": int(project_id),
            "project_title": project.get("title"),
            "control": target.control.name,
            "object": target.object_tag.name,
            "value_key": target.object_tag.value_key,
            "method": method,
            "n_tasks": len(tasks),
            "n_unlabeled": len(unlabeled_ids),
            "n_disagreements": int(sum(row["disagreement"] for row in rows)),
        },
    )
    task_data = {int(task["id"]): dict(task.get("data") or {}) for task in tasks}
    return PulledProject(dataset, project, target, task_data)


def _annotator(completed_by: Any, emails: dict[int, str]) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id"))
    if completed_by is None:
        return ""
    return emails.get(int(completed_by), str(completed_by))


def _provenance(rows: list[dict[str, Any]], ids: np.ndarray) -> pd.DataFrame:
    provenance = pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)
    provenance.index = pd.Index(ids, name="id")
    provenance["updated_at"] = pd.to_datetime(provenance["updated_at"], utc=True)
    return provenance.astype({"annotation_id": "int64", "n_annotations": "int64", "disagreement": bool})


def _inputs(
    client: LabelStudioClient, target: ClassificationTarget, tasks: Sequence[dict[str, Any]], progress: bool
) -> Any:
    value_key = str(target.object_tag.value_key)
    if target.kind == "text":
        texts = []
        for task in tasks:
            value = _task_field(task, value_key)
            texts.append(value if isinstance(value, str) else json.dumps(value))
        return texts
    if target.kind == "image":
        return _fetch_images(client, tasks, value_key, progress)
    return _tabular_inputs(tasks, value_key)


def _fetch_images(
    client: LabelStudioClient, tasks: Sequence[dict[str, Any]], value_key: str, progress: bool
) -> list[bytes]:
    references = []
    for task in tasks:
        value = _task_field(task, value_key)
        if not isinstance(value, str) or not value:
            raise ConnectorError(f"Task {task['id']}: data field {value_key!r} is not an image URL")
        references.append((int(task["id"]), value))
    anonymous = requests.Session()
    anonymous.headers["User-Agent"] = "relabel-connector"

    def fetch(reference: tuple[int, str]) -> bytes:
        return fetch_image(client, reference[1], task_id=reference[0], anonymous_session=anonymous)

    with ThreadPoolExecutor(max_workers=IMAGE_FETCH_WORKERS) as pool:
        images = list(
            tqdm(
                pool.map(fetch, references),
                total=len(references),
                desc="fetch images",
                unit="image",
                disable=not progress,
            )
        )
    anonymous.close()
    return images


def fetch_image(
    client: LabelStudioClient,
    reference: str,
    task_id: int | None = None,
    anonymous_session: requests.Session | None = None,
) -> bytes:
    """The bytes of the image a task refers to (a data: URI, a Label Studio path/URL, or an external URL).

    Label Studio uploads (any path or URL on the server's origin) are fetched with the token; URLs on any
    other origin without credentials. ConnectorError naming the task when the image cannot be read or is
    not an image Pillow can open.
    """
    where = f"Task {task_id}" if task_id is not None else "Image"
    if reference.startswith("data:"):
        content = _decode_data_uri(reference, where)
    else:
        url = client.absolute_url(reference)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ConnectorError(
                f"{where}: image URL scheme {scheme!r} is not supported ({_shorten(reference)}); relabel "
                "reads Label Studio uploads, http(s) URLs and data: URIs"
            )
        try:
            status, content = client.download_file(url, anonymous_session or requests.Session())
        except requests.RequestException as error:
            raise ConnectorError(
                f"{where}: could not fetch its image {_shorten(url)} ({type(error).__name__})"
            ) from None
        except ConnectorError as error:
            raise ConnectorError(f"{where}: could not fetch its image {_shorten(url)}: {error}") from None
        if status == 401 and client.is_on_server(url):
            raise client.rejected_token_error()
        if status != 200:
            raise ConnectorError(f"{where}: fetching its image {_shorten(url)} answered HTTP {status}")
    _check_image(content, where)
    return content


def _task_field(task: dict[str, Any], key: str) -> Any:
    data = task.get("data") or {}
    if key not in data:
        raise ConnectorError(
            f"Task {task.get('id')}: its data has no field {key!r} (fields: "
            f"{', '.join(sorted(data)) or 'none'}), "
            f"but the labeling config reads ${key}"
        )
    return data[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tabular_inputs(tasks: Sequence[dict[str, Any]], value_key: str) -> pd.DataFrame:
    """Numeric rows: ``task.data[value_key]`` as a dict of column -> number, else the numeric top-level
    fields."""
    if not tasks:
        return pd.DataFrame(index=pd.Index([], name="id", dtype="int64"))
    index = pd.Index([int(task["id"]) for task in tasks], name="id")
    nested = all(isinstance((task.get("data") or {}).get(value_key), dict) for task in tasks)
    if nested:
        rows = [task["data"][value_key] for task in tasks]
        columns = list(dict.fromkeys(key for row in rows for key in row))
    else:
        rows = [task.get("data") or {} for task in tasks]
        columns = [key for key, value in rows[0].items() if _is_number(value)]
        columns = [key for key in columns if all(_is_number(row.get(key)) for row in rows)]
        if not columns:
            raise ConnectorError(
                f"Task {tasks[0].get('id')}: data field {value_key!r} is not a dict of column -> "
                "number, and no "
                "top-level task-data field is numeric in every labeled task; tabular input needs numbers"
            )
    matrix = np.empty((len(rows), len(columns)), dtype=np.float64)
    for row_number, (task, row) in enumerate(zip(tasks, rows, strict=True)):
        for column_number, column in enumerate(columns):
            value = row.get(column)
            if not _is_number(value) or not np.isfinite(value):
                raise ConnectorError(
                    f"Task {task.get('id')}: column {column!r} is {value!r}, not a finite number; "
                    "tabular input "
                    "needs a number in every column"
                )
            matrix[row_number, column_number] = float(value)
    return pd.DataFrame(matrix, columns=[str(column) for column in columns], index=index)


def _decode_data_uri(uri: str, where: str) -> bytes:
    header, separator, payload = uri.partition(",")
    if not separator:
        raise ConnectorError(f"{where}: its image data: URI has no ',' separating header and data")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise ConnectorError(f"{where}: its image data: URI is not valid base64") from None


def _check_image(content: bytes, where: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ConnectorError(
            f"{where}: its image ({len(content)} bytes) is not an image file Pillow can read"
        ) from None


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
