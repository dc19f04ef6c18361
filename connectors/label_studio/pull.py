"""Pull: a Label Studio classification project → a :class:`relabel.dataset.LabeledDataset`.

Which control holds the label and which input kind it labels: :mod:`connectors.label_studio.config`.
Which annotations count and which label wins: :mod:`connectors.label_studio.annotations` (cancelled ones
and drafts do not count; several annotators → majority, ties to the newest, ``disagreement`` recorded).
Tasks without a usable annotation go to ``unlabeled_ids``. A labeled task whose input cannot be read (an
image URL with a bad port, a broken IPv6 literal or an unknown scheme, a data: URI or a download that is not
an image, an image that answers 404, a missing input field, a tabular cell that is not a number) is left
out and named in ``dataset.skipped`` (task id → reason): one bad task never stops the others. What stops
the pull is what no task can get past: a rejected token, an unreachable server, an unsupported config, a
label that is not one of the config's choices.

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
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import requests
from tqdm.auto import tqdm

from connectors.label_studio.annotations import majority_label
from connectors.label_studio.client import LabelStudioClient, host_problem, redact_url
from connectors.label_studio.config import ClassificationTarget, parse_labeling_config
from relabel.dataset import LabeledDataset
from relabel.errors import ConnectorError, shown

PullMethod = Literal["export", "list"]
IMAGE_FETCH_WORKERS = 8
PROVENANCE_COLUMNS = ["annotation_id", "annotator", "updated_at", "n_annotations", "disagreement"]


class UnreadableInputError(ConnectorError):
    """One task's input cannot be read (the pull skips that task and names it; see the module docstring)."""


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
    inputs, skipped = _inputs(client, target, labeled, progress)
    kept = [position for position, task in enumerate(labeled) if int(task["id"]) not in skipped]
    ids = np.array([int(labeled[position]["id"]) for position in kept], dtype=np.int64)
    if len(kept) < len(labeled) and isinstance(inputs, list):
        inputs = [inputs[position] for position in kept]
    dataset = LabeledDataset(
        ids=ids,
        inputs=inputs,
        kind=target.kind,
        labels=np.array([labels[position] for position in kept], dtype=object),
        classes=target.classes,
        provenance=_provenance([rows[position] for position in kept], ids),
        unlabeled_ids=unlabeled_ids,
        skipped=skipped,
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
            "n_skipped": len(skipped),
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
) -> tuple[Any, dict[int, str]]:
    """(inputs of the readable tasks, {task id: reason} of the unreadable ones). Inputs are in task order: a
    list for text and images (one entry per task, the skipped ones included, to be dropped by the caller), a
    DataFrame of the readable tasks only for tabular data."""
    value_key = str(target.object_tag.value_key)
    if target.kind == "tabular":
        return _tabular_inputs(tasks, value_key)
    skipped: dict[int, str] = {}
    if target.kind == "image":
        return _fetch_images(client, tasks, value_key, progress, skipped), skipped
    texts: list[str] = []
    for task in tasks:
        try:
            value = _task_field(task, value_key)
        except UnreadableInputError as error:
            skipped[int(task["id"])] = str(error)
            value = ""
        if value is None:
            skipped[int(task["id"])] = f"Task {task['id']}: its data field {value_key!r} is null (no text)"
        texts.append(value if isinstance(value, str) else json.dumps(value))
    return texts, skipped


def _fetch_images(
    client: LabelStudioClient,
    tasks: Sequence[dict[str, Any]],
    value_key: str,
    progress: bool,
    skipped: dict[int, str],
) -> list[bytes]:
    """Every task's image bytes, in task order (b"" for a task recorded in ``skipped`` with its reason)."""
    references = []
    for task in tasks:
        try:
            value = _task_field(task, value_key)
            if not isinstance(value, str) or not value:
                raise UnreadableInputError(
                    f"Task {task['id']}: data field {value_key!r} is not an image URL ({shown(value, 40)})"
                )
        except UnreadableInputError as error:
            skipped[int(task["id"])] = str(error)
            value = None
        references.append((int(task["id"]), value))
    anonymous = requests.Session()
    anonymous.headers["User-Agent"] = "relabel-connector"

    def fetch(reference: tuple[int, str | None]) -> bytes | UnreadableInputError:
        if reference[1] is None:
            return b""
        try:
            return fetch_image(client, reference[1], task_id=reference[0], anonymous_session=anonymous)
        except UnreadableInputError as error:
            return error

    with ThreadPoolExecutor(max_workers=IMAGE_FETCH_WORKERS) as pool:
        answers = list(
            tqdm(
                pool.map(fetch, references),
                total=len(references),
                desc="fetch images",
                unit="image",
                disable=not progress,
            )
        )
    anonymous.close()
    images: list[bytes] = []
    for (task_id, _), answer in zip(references, answers, strict=True):
        if isinstance(answer, UnreadableInputError):
            skipped[task_id] = str(answer)
            answer = b""
        images.append(answer)
    return images


def fetch_image(
    client: LabelStudioClient,
    reference: str,
    task_id: int | None = None,
    anonymous_session: requests.Session | None = None,
) -> bytes:
    """The bytes of the image a task refers to (a data: URI, a Label Studio path/URL, or an external URL).

    Label Studio uploads (any path or URL on the server's origin) are fetched with the token; URLs on any
    other origin without credentials. :class:`UnreadableInputError` naming the task when this task's image
    cannot be read (a malformed URL, another scheme, an HTTP error, a host that cannot be reached, content
    Pillow cannot open); ConnectorError when no task could be read (the token rejected, this Label Studio
    unreachable).
    """
    where = f"Task {task_id}" if task_id is not None else "Image"
    if reference.startswith("data:"):
        content = _decode_data_uri(reference, where)
    else:
        url = _checked_image_url(client, reference, where)
        try:
            status, content = client.download_file(url, anonymous_session or requests.Session())
        except requests.RequestException as error:
            raise UnreadableInputError(
                f"{where}: could not fetch its image {_shown_url(url)} ({type(error).__name__})"
            ) from None
        if status == 401 and client.is_on_server(url):
            raise client.rejected_token_error()
        if status != 200:
            raise UnreadableInputError(
                f"{where}: fetching its image {_shown_url(url)} answered HTTP {status}"
            )
    _check_image(content, where)
    return content


def _checked_image_url(client: LabelStudioClient, reference: str, where: str) -> str:
    """``reference`` as an absolute http(s) URL; UnreadableInputError naming the task for one that is
    malformed (a port not a number in 1-65535, a broken IPv6 literal, no host, spaces) or of another
    scheme."""
    try:
        url = client.absolute_url(reference)
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnreadableInputError(
            f"{where}: its image URL is malformed ({_url_problem(error)}): {_shown_url(reference)}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnreadableInputError(
            f"{where}: image URL scheme {scheme!r} is not supported ({_shown_url(reference)}); relabel "
            "reads Label Studio uploads, http(s) URLs and data: URIs"
        )
    problem = host_problem(parts.netloc) if parts.hostname else "no host"
    if problem:
        raise UnreadableInputError(
            f"{where}: its image URL is malformed ({problem}): {_shown_url(reference)}"
        )
    if port == 0 or any(character.isspace() for character in url):
        raise UnreadableInputError(
            f"{where}: its image URL is malformed (no host, port 0 or a space): {_shown_url(reference)}"
        )
    return url


def _url_problem(error: ValueError) -> str:
    text = str(error)
    if "IPv6" in text:
        return "a broken IPv6 address"
    if "ort" in text:
        return "the port is not a number in 1-65535"
    return _shorten(text, 60)


def _task_field(task: dict[str, Any], key: str) -> Any:
    data = task.get("data") or {}
    if key not in data:
        raise UnreadableInputError(
            f"Task {task.get('id')}: its data has no field {key!r} (fields: "
            f"{', '.join(sorted(data)) or 'none'}), "
            f"but the labeling config reads ${key}"
        )
    return data[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tabular_inputs(tasks: Sequence[dict[str, Any]], value_key: str) -> tuple[pd.DataFrame, dict[int, str]]:
    """(numeric rows of the readable tasks, {task id: reason} of the others): ``task.data[value_key]`` as a
    dict of column -> number when any task has it so (the columns: those at least half of the rows hold; a
    task whose field is not such a dict, lacks a column or holds a value that is not a finite number is
    skipped), else the top-level fields that are numeric in every labeled task."""
    if not tasks:
        return pd.DataFrame(index=pd.Index([], name="id", dtype="int64")), {}
    nested = any(isinstance((task.get("data") or {}).get(value_key), dict) for task in tasks)
    if nested:
        rows = [(task.get("data") or {}).get(value_key) for task in tasks]
        dicts = [row for row in rows if isinstance(row, dict)]
        seen = Counter(key for row in dicts for key in row)  # a column most rows lack is one task's oddity
        columns = [
            key for key in dict.fromkeys(key for row in dicts for key in row) if 2 * seen[key] >= len(dicts)
        ]
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
    skipped: dict[int, str] = {}
    kept_ids: list[int] = []
    matrix: list[list[float]] = []
    for task, row in zip(tasks, rows, strict=True):
        problem = _tabular_row_problem(row, columns, value_key)
        if problem is not None:
            skipped[int(task["id"])] = f"Task {task.get('id')}: {problem}"
            continue
        kept_ids.append(int(task["id"]))
        matrix.append([float(row[column]) for column in columns])
    frame = pd.DataFrame(
        np.array(matrix, dtype=np.float64).reshape(len(matrix), len(columns)),
        columns=[str(column) for column in columns],
        index=pd.Index(kept_ids, name="id", dtype="int64"),
    )
    return frame, skipped


def _tabular_row_problem(row: Any, columns: Sequence[str], value_key: str) -> str | None:
    """Why one task's tabular row cannot be read (None if it can)."""
    if not isinstance(row, dict):
        return f"data field {value_key!r} is {shown(row, 40)}, not a dict of column -> number"
    for column in columns:
        value = row.get(column)
        if not _is_number(value) or not np.isfinite(value):
            return (
                f"column {column!r} is {shown(value, 40)}, not a finite number; tabular input needs a "
                "number in every column"
            )
    return None


def _decode_data_uri(uri: str, where: str) -> bytes:
    header, separator, payload = uri.partition(",")
    if not separator:
        raise UnreadableInputError(f"{where}: its image data: URI has no ',' separating header and data")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise UnreadableInputError(f"{where}: its image data: URI is not valid base64") from None


def _check_image(content: bytes, where: str) -> None:
    """UnreadableInputError naming the task unless ``content`` decodes completely as an image (a cut file that
    passes Pillow's header check fails here, not later in the featurizer, which would stop the audit)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise UnreadableInputError(
            f"{where}: its image ({len(content)} bytes) is not an image file Pillow can read"
        ) from None


def _shown_url(url: str) -> str:
    """An image URL for a message: without its query string and fragment (a signed URL's signature or a
    token would sit there; shown as ``?…``) and without a ``user:password@`` part; at most 120 characters."""
    base, query, _ = url.partition("?")
    base, fragment, _ = base.partition("#")
    base = redact_url(base) if "@" in base else base
    if base.startswith("data:"):
        base = base[:30]
    return _shorten(base + ("?…" if query or fragment else ""))


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
