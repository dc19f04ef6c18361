"""The only code in relabel that speaks to a Label Studio server.

:class:`LabelStudioClient` has one method per server operation relabel needs (read a project, export
tasks, import tasks and predictions, views, annotations, ...). Each takes and returns plain Python values
(dicts and lists shaped like Label Studio's JSON), so that everything above it (pull, push, sync, undo,
change detection) is ordinary logic that a small in-memory fake of this class can exercise in a unit test.

It is built on the official client, ``label_studio_sdk.LabelStudio`` (kept in step with the server's API;
it exchanges a Personal Access Token for short-lived access tokens by itself, and sends legacy tokens as
``Authorization: Token …``). Raw HTTP goes through the SDK's own authenticated HTTP client, and only where
the SDK has no call for it; each such method says why.

Errors: every failure becomes a :class:`relabel.errors.ConnectorError` whose message is one line (what
failed, what to do) and never contains the token: the SDK's own exception text (which prints headers and
bodies) is never shown, and what is shown goes through :func:`redact` (the one redaction function, also
used by the nightly log). A token is checked when it enters (:func:`validate_api_key`: one line of
printable ASCII), so a malformed one is refused with a message that shows no part of it, never sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import os
import re
import stat
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import requests
from tqdm.auto import tqdm

from relabel.errors import ConnectorError, NotFoundError

URL_ENV = "LABEL_STUDIO_URL"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
DEFAULT_TIMEOUT_SECONDS = 120
EXPORT_TIMEOUT_SECONDS = 1800
EXPORT_IDS_CHUNK = 500  # ids per export request: URL parameters, and Django refuses > 1,000 fields
# Label Studio on SQLite answers a task-list page of 1,000 with HTTP 500 "Expression tree is too large
# (maximum depth 1000)" (its per-page annotation query chains one term per task); 250 stays well below.
LIST_PAGE_SIZE = 250
LABEL_STUDIO_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what the Data Manager's Datetime filters parse

Result = TypeVar("Result")


REDACTED = "***"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AUTH_HEADER = re.compile(r"\b(Token|Bearer)\s+[^\s'\",;]+", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")


def _secret_forms(secret: str) -> set[str]:
    """The ways ``secret`` can appear in a message: raw, ``repr``/JSON-escaped, URL-encoded, and each of its
    lines (a token file with a line break inside)."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        secret.encode("unicode_escape").decode("ascii"),
    }
    forms.update(line.strip() for line in secret.splitlines())
    return {form for form in forms if len(form) >= 6}


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret hidden: each of ``secrets`` in any form (raw, ``repr``-escaped,
    JSON-escaped, URL-encoded, line by line), any JWT (a Personal Access Token and the access tokens derived
    from it), any ``Token …``/``Bearer …`` credential, and the ``user:password@`` part of URLs. The one
    redaction function of relabel: client errors and the nightly log use it."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= _secret_forms(str(secret))
    for form in sorted(forms, key=len, reverse=True):  # longest first: a line of a secret is inside it
        text = text.replace(form, REDACTED)
    text = _JWT.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(lambda match: f"{match.group(1)} {REDACTED}", text)
    return _URL_CREDENTIALS.sub(lambda match: f"{match.group(1)}{REDACTED}@", text)


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part (shown as ``***@``)."""
    return _URL_CREDENTIALS.sub(lambda match: f"{match.group(1)}{REDACTED}@", url)


def validate_api_key(raw: str, source: str) -> str:
    """The token in ``raw`` (from ``source``, e.g. "the API key file PATH"), whitespace and byte-order marks
    stripped from both ends; ConnectorError, with one line that shows no part of it, unless what is left is
    one line of printable ASCII without spaces (what an HTTP ``Authorization`` header can carry)."""
    key = raw.strip().strip("\ufeff").strip()
    while key.startswith("\ufeff") or key.endswith("\ufeff"):
        key = key.strip("\ufeff").strip()
    if not key:
        raise ConnectorError(f"{source} is empty; put the Label Studio token in it")
    if "\n" in key or "\r" in key:
        raise ConnectorError(
            f"{source} holds more than one line; put only the token in it, on one line (nothing is sent)"
        )
    if any(character.isspace() for character in key):
        raise ConnectorError(
            f"{source} holds a space; put only the token in it (without a 'Token ' or 'Bearer ' prefix)"
        )
    if not all(0x21 <= ord(character) <= 0x7E for character in key):
        raise ConnectorError(
            f"{source} holds a character that cannot be in a token (not printable ASCII); put only the "
            "token in it (nothing is sent)"
        )
    return key


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SERVER_URL_HINT = "give the server's base URL only, e.g. http://localhost:8080 (nothing was sent)"


def server_base_url(raw: str, source: str = "the Label Studio URL", secrets: Iterable[str] = ()) -> str:
    """The Label Studio base URL in ``raw`` (from ``source``, e.g. "$LABEL_STUDIO_URL"), checked before any
    request: ``http://`` is added when no scheme is given, a trailing ``/`` dropped.

    ConnectorError (one line) for a URL that is not ``http(s)://host[:port][/path]``: another scheme, no
    host, a port that is not a number in 1-65535, a broken IPv6 literal, spaces or control characters, and
    for one that carries credentials, which relabel never sends: a ``user:password@`` part (shown as
    ``***@``), a query string or a fragment (``?…``, ``#…``: where a token would be pasted). Such a message
    shows at most the URL's ``scheme://host:port``, never the query, fragment or user part, and nothing of
    a URL that holds one of ``secrets`` (the token) in any form.
    """
    url = raw.strip()
    if any(form in url for secret in secrets if secret for form in _secret_forms(secret)):
        raise ConnectorError(
            f"{source} holds the API token; put it only in {API_KEY_ENV} or --api-key-file and "
            f"{SERVER_URL_HINT}"
        )
    if not _SCHEME.match(url):
        url = "http://" + url
    shown = _shown_origin(url)
    if any(character.isspace() or ord(character) < 0x20 or ord(character) == 0x7F for character in url):
        raise ConnectorError(f"{source} holds a space or a control character; {SERVER_URL_HINT}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConnectorError(
            f"{source} {shown}is not a valid URL ({_url_problem(error)}); {SERVER_URL_HINT}"
        ) from None
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConnectorError(
            f"{source} {shown}holds a query string or fragment ('?…' or '#…', not shown: it can carry a "
            f"token); put the token in {API_KEY_ENV} or --api-key-file and {SERVER_URL_HINT}"
        )
    if "@" in parts.netloc:
        raise ConnectorError(
            f"{source} {redact_url(url)} holds a user name or password; remove the 'user:...@' part "
            "(relabel logs in with the API token)"
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise ConnectorError(f"{source} {shown}is not an http(s) URL; {SERVER_URL_HINT}")
    if not parts.hostname:
        raise ConnectorError(f"{source} {shown}names no host; {SERVER_URL_HINT}")
    problem = host_problem(parts.netloc)
    if problem:
        raise ConnectorError(f"{source} {shown}is not a valid URL ({problem}); {SERVER_URL_HINT}")
    if port == 0:
        raise ConnectorError(f"{source} {shown}has port 0; {SERVER_URL_HINT}")
    return url.rstrip("/")


_HOST_NAME = re.compile(r"[\w.-]+")
_BRACKETED = re.compile(r"\[([^\[\]]*)\](:\d*)?")


def host_problem(netloc: str) -> str | None:
    """Why the ``host[:port]`` part of a URL (without a user part) cannot be connected to, in words: a
    broken IPv6 literal (``[::1`` or ``[::1]]``) or a character no host name holds; None when it can."""
    host = netloc.rpartition("@")[2]
    if "[" in host or "]" in host:
        match = _BRACKETED.fullmatch(host)
        try:
            ipaddress.IPv6Address((match.group(1) if match else "").split("%")[0])
        except ValueError:
            return "a broken IPv6 address: write it as [::1]"
        return None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not _HOST_NAME.fullmatch(name):
        return "the host name holds a character that cannot be in one"
    return None


def _shown_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` for an error message followed by a space ("" when it cannot be
    shown safely: a user part, or characters that are not printable ASCII)."""
    scheme, _, rest = url.partition("://")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in netloc or not all(0x21 <= ord(character) <= 0x7E for character in scheme + netloc):
        return ""
    return _shorten(f"{scheme}://{netloc}", 80) + " "


def _url_problem(error: ValueError) -> str:
    """Python's reason a URL does not parse, in words (a bad port or a broken IPv6 literal)."""
    text = str(error)
    if "IPv6" in text:
        return "a broken IPv6 address: write it as [::1]"
    if "Port" in text or "port" in text:
        return "the port is not a number in 1-65535"
    return _shorten(text, 80)


def _origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a URL, with the default port filled in (80 for http, 443 for https)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return scheme, (parts.hostname or "").lower(), port


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> Any:
    """An SDK model (pydantic) as the JSON-shaped dict Label Studio sent; lists element-wise."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "dict"):
        return value.dict()
    return value


class LabelStudioClient:
    """One Label Studio server (1.23; OSS and Enterprise), as relabel uses it.

    ``url`` and ``api_key`` default to ``$LABEL_STUDIO_URL`` and ``$LABEL_STUDIO_API_KEY``, as in the SDK.
    ``api_key`` is a Personal Access Token or a legacy token; it goes only to the server at ``url``
    (images on other hosts are fetched without it) and never appears in a message.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        url_source = "the url argument" if url is not None else f"${URL_ENV}"
        url = url if url is not None else os.environ.get(URL_ENV)
        from_argument = api_key is not None
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not url:
            raise ConnectorError(
                f"No Label Studio URL: pass url=... or set {URL_ENV} (e.g. http://localhost:8080)"
            )
        if not api_key:
            raise ConnectorError(
                f"No Label Studio API key: pass api_key=... or set {API_KEY_ENV} (a Personal Access Token "
                "from Account & Settings, or a legacy token)"
            )
        api_key = validate_api_key(api_key, "the api_key argument" if from_argument else f"${API_KEY_ENV}")
        url = server_base_url(url, url_source, secrets=(api_key,))
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._sdk = self._call("connect", self._connect)

    def _connect(self) -> Any:
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self._api_key, timeout=DEFAULT_TIMEOUT_SECONDS)

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r}, token_type={self.token_type!r})"

    @property
    def token_type(self) -> str:
        """``"legacy"``, ``"refresh"`` (a Personal Access Token) or ``"access"`` (a JWT access token)."""
        parts = self._api_key.split(".")
        if len(parts) != 3:
            return "legacy"
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError):
            return "legacy"
        return str(claims.get("token_type", "access")) if isinstance(claims, dict) else "legacy"

    # ------------------------------------------------------------------ errors
    def _call(
        self,
        what: str,
        function: Callable[..., Result],
        *args: Any,
        not_found: str | None = None,
        **kwargs: Any,
    ) -> Result:
        """``function(*args, **kwargs)`` with every failure turned into a one-line ConnectorError (a 404 into
        NotFoundError with the message ``not_found``, when given)."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            return function(*args, **kwargs)
        except ApiError as error:
            if error.status_code == 404 and not_found is not None:
                raise NotFoundError(not_found) from None
            raise self._status_error(what, error.status_code, error.body) from None
        except (httpx.HTTPError, httpx.InvalidURL, requests.RequestException) as error:
            raise ConnectorError(
                f"Could not reach Label Studio at {self.url} ({type(error).__name__} on {what}); "
                f"check {URL_ENV} and that the server is running"
            ) from None

    def rejected_token_error(self) -> ConnectorError:
        """The error for a token the server refused (401)."""
        return self._status_error("a request", 401, None)

    def _status_error(self, what: str, status: int | None, body: Any) -> ConnectorError:
        if status == 401:
            return ConnectorError(
                f"Label Studio at {self.url} rejected the API token (401): check {API_KEY_ENV} (a Personal "
                "Access Token from Account & Settings; legacy tokens only work when the organization has "
                "legacy tokens enabled)"
            )
        detail = self._redact(_body_detail(body))
        if status == 403:
            return ConnectorError(
                f"Label Studio at {self.url} refused {what} (403: {detail}); the token's user lacks "
                "permission for it"
            )
        return ConnectorError(f"Label Studio at {self.url} answered {what} with {status}: {detail}")

    def secrets(self) -> list[str]:
        """The token and the access token the SDK derived from it (a Personal Access Token), if any."""
        derived = getattr(
            getattr(getattr(getattr(self, "_sdk", None), "_client_wrapper", None), "_tokens_client", None),
            "_access_token",
            None,
        )
        return [secret for secret in (self._api_key, derived) if isinstance(secret, str) and secret]

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets())

    # ------------------------------------------------------------------ raw HTTP through the SDK
    def _raw(
        self, method: str, path: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, **kwargs: Any
    ) -> httpx.Response:
        """One request on the SDK's authenticated HTTP client (same auth, same token refresh).

        Used only where the SDK has no method for the call; returns the response (status < 400) or raises
        ConnectorError. ``kwargs``: ``params``, ``json``, ``files``, ``data``.
        """
        what = f"{method} {path}"
        if urllib.parse.urlsplit(path).scheme and not self.is_on_server(path):
            raise ConnectorError(f"Refusing to send Label Studio credentials to {path}: not on {self.url}")
        path = urllib.parse.urlsplit(path)._replace(scheme="", netloc="").geturl()

        def send() -> httpx.Response:
            http = self._sdk._client_wrapper.httpx_client  # the SDK's client: auth headers are added by it
            return http.request(
                path.lstrip("/"), method=method, request_options={"timeout_in_seconds": timeout}, **kwargs
            )

        response = self._call(what, send)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.headers.get("Content-Type", "non-JSON response")
            raise self._status_error(what, response.status_code, body)
        return response

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call by path (for set-up scripts such as the demo); the decoded JSON body or None.

        ``kwargs``: ``params``, ``json``, ``files`` (a list of ``(field, (name, bytes, type))``, field names
        unique), ``timeout`` (seconds).
        """
        if isinstance(kwargs.get("files"), list):  # the SDK's HTTP client takes files as a dict only
            kwargs["files"] = dict(kwargs["files"])
        response = self._raw(method, path, **kwargs)
        return _json(response, f"{method} {path}") if response.content else None

    # ------------------------------------------------------------------ projects
    def get_project(self, project_id: int) -> dict[str, Any]:
        """The project's JSON (``title``, ``label_config``, ``task_number``, ``model_version``, ...);
        NotFoundError when there is no such project."""
        missing = f"Label Studio at {self.url} has no project with id {project_id}"
        missing += " (or the token's user cannot see it)"
        project = self._call(
            f"GET project {int(project_id)}", self._sdk.projects.get, int(project_id), not_found=missing
        )
        return _plain(project)

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project the token's user can see (title, description, id)."""
        return self._call(
            "list projects", lambda: [_plain(p) for p in self._sdk.projects.list(page_size=100)]
        )

    def create_project(self, **fields: Any) -> dict[str, Any]:
        """Create a project (``title``, ``description``, ``label_config``, ``sampling``, ...)."""
        return _plain(self._call("create project", self._sdk.projects.create, **fields))

    def update_project(self, project_id: int, **fields: Any) -> None:
        """Change some of a project's settings (e.g. ``model_version``)."""
        self._call(f"update project {project_id}", self._sdk.projects.update, int(project_id), **fields)

    def delete_project(self, project_id: int) -> None:
        """Delete a project and everything in it."""
        self._call(f"delete project {project_id}", self._sdk.projects.delete, int(project_id))

    def server_time_and_task_count(self, project_id: int) -> tuple[str | None, int | None]:
        """(the server's current time, from the HTTP ``Date`` header of reading the project, formatted as a
        Data Manager datetime filter value; the project's task count). Either is None if not given."""
        response = self._call(
            f"GET project {project_id}", self._sdk.projects.with_raw_response.get, int(project_id)
        )
        try:
            task_number = int(getattr(response.data, "task_number", None))
        except (TypeError, ValueError):
            task_number = None
        date = response.headers.get("date")
        if not date:
            return None, task_number
        moment = parsedate_to_datetime(date).astimezone(UTC)
        return moment.strftime(LABEL_STUDIO_DATETIME_FORMAT), task_number

    def project_counts(self, project_id: int) -> tuple[str | None, tuple[int | None, ...]]:
        """(the server's current time as in :meth:`server_time_and_task_count`; the project's numbers of
        tasks, annotations and skipped annotations), from one read of the project."""
        response = self._call(
            f"GET project {project_id}", self._sdk.projects.with_raw_response.get, int(project_id)
        )
        project = _plain(response.data) or {}
        counts = []
        for key in ("task_number", "total_annotations_number", "skipped_annotations_number"):
            try:
                counts.append(int(project.get(key)))
            except (TypeError, ValueError):
                counts.append(None)
        date = response.headers.get("date")
        moment = None if not date else parsedate_to_datetime(date).astimezone(UTC)
        return (None if moment is None else moment.strftime(LABEL_STUDIO_DATETIME_FORMAT)), tuple(counts)

    def server_now(self, project_id: int) -> datetime:
        """The server's clock (HTTP ``Date``, whole seconds, UTC); this machine's clock if the server
        does not say."""
        moment, _ = self.server_time_and_task_count(project_id)
        return parse_server_datetime(moment) if moment else datetime.now(UTC)

    # ------------------------------------------------------------------ tasks
    def export_tasks(
        self, project_id: int, task_ids: Sequence[int] | None = None, progress: bool = False
    ) -> list[dict[str, Any]]:
        """Tasks with annotations, drafts and predictions: all of the project's, or just ``task_ids``.

        One streamed ``GET /api/projects/{id}/export?exportType=JSON&download_all_tasks=true`` (the fastest
        way to read a project; 2.5x the paginated task list), in chunks of 500 ids when ``task_ids`` is given.
        """
        if task_ids is None:
            return self._export(project_id, None, progress)
        tasks: list[dict[str, Any]] = []
        ids = [int(task_id) for task_id in task_ids]
        for start in range(0, len(ids), EXPORT_IDS_CHUNK):
            tasks.extend(self._export(project_id, ids[start : start + EXPORT_IDS_CHUNK], False))
        return tasks

    def _export(self, project_id: int, ids: list[int] | None, progress: bool) -> list[dict[str, Any]]:
        what = f"export of project {project_id}"
        if ids is not None and not ids:
            return []

        def download() -> bytes:
            buffer = io.BytesIO()
            chunks = self._sdk.projects.exports.download_sync(
                int(project_id),
                export_type="JSON",
                download_all_tasks=True,
                ids=[str(task_id) for task_id in ids] if ids is not None else None,
                request_options={"timeout_in_seconds": EXPORT_TIMEOUT_SECONDS, "chunk_size": 1 << 20},
            )
            with tqdm(
                unit="B", unit_scale=True, desc=f"export project {project_id}", disable=not progress
            ) as bar:
                for chunk in chunks:
                    buffer.write(chunk)
                    bar.update(len(chunk))
            return buffer.getvalue()

        from label_studio_sdk.core.api_error import ApiError

        try:
            content = self._call(what, download)
        except ConnectorError:
            raise
        except ApiError as error:  # raised lazily by the streaming generator
            raise self._status_error(what, error.status_code, error.body) from None
        try:
            tasks = json.loads(content)
        except ValueError:
            raise ConnectorError(f"Label Studio at {self.url}: the {what} is not JSON") from None
        if not isinstance(tasks, list):
            raise ConnectorError(f"Label Studio at {self.url}: the {what} is not a list of tasks")
        return tasks

    def list_tasks(self, project_id: int, progress: bool = False) -> list[dict[str, Any]]:
        """Every task with its annotations through the paginated task list (``LIST_PAGE_SIZE`` a page).

        Slower than :meth:`export_tasks`; kept for servers where the export endpoint is disabled or times
        out behind a proxy.
        """

        def pages() -> Iterator[dict[str, Any]]:
            pager = self._sdk.tasks.list(
                project=int(project_id),
                fields="all",
                page_size=LIST_PAGE_SIZE,
                request_options={"timeout_in_seconds": EXPORT_TIMEOUT_SECONDS},
            )
            for task in pager:
                yield _plain(task)

        def collect() -> list[dict[str, Any]]:
            with tqdm(desc=f"list project {project_id}", unit="task", disable=not progress) as bar:
                tasks = []
                for task in pages():
                    tasks.append(task)
                    bar.update(1)
                return tasks

        return self._call(f"task list of project {project_id}", collect)

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Create tasks (``{"data": …, "predictions": […]}``) in list order (ascending ids); their ids."""
        answer = self._call(
            f"import into project {project_id}",
            self._sdk.projects.import_tasks,
            int(project_id),
            request=list(tasks),
            return_task_ids=True,
        )
        return [int(task_id) for task_id in (_plain(answer) or {}).get("task_ids") or []]

    def update_task_data(self, task_id: int, data: dict[str, Any]) -> None:
        """Replace a task's ``data``."""
        self._call(f"update task {task_id}", self._sdk.tasks.update, str(int(task_id)), data=data)

    def delete_tasks(self, project_id: int, task_ids: Sequence[int]) -> None:
        """Delete tasks in bulk (the Data Manager's ``delete_tasks`` action)."""
        if not task_ids:
            return
        self._call(
            f"delete tasks of project {project_id}",
            self._sdk.actions.create,
            id="delete_tasks",
            project=int(project_id),
            selected_items={"all": False, "included": [int(task_id) for task_id in task_ids]},
        )

    def tasks_updated_after(self, project_id: int, moment: str, limit: int = 1000) -> list[int] | None:
        """Ids of the tasks whose ``updated_at`` is later than ``moment`` (a Data Manager datetime), from one
        Data Manager query; None when there are more than ``limit``.

        Raw HTTP: the SDK's task pager hides the response's ``total`` and would fetch every page.
        """
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": moment,
                    }
                ],
            }
        }
        params = {
            "project": int(project_id),
            "page_size": limit,
            "fields": "task_only",
            "query": json.dumps(query),
        }
        body = _json(self._raw("GET", "/api/tasks/", params=params), "GET /api/tasks/")
        if int(body.get("total", 0)) > limit:
            return None
        return [int(task["id"]) for task in body.get("tasks", [])]

    # ------------------------------------------------------------------ predictions
    def list_predictions(self, project_id: int) -> list[dict[str, Any]]:
        """Every prediction of the project (``id``, ``task``, ``model_version``, ``score``, ``result``...)."""
        return _plain(
            self._call(
                f"prediction list of project {project_id}",
                self._sdk.predictions.list,
                project=int(project_id),
            )
        )

    def import_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]]) -> None:
        """Create predictions in bulk (``task``, ``result``, ``score``, ``model_version``)."""
        self._call(
            f"prediction import into project {project_id}",
            self._sdk.projects.import_predictions,
            int(project_id),
            request=list(predictions),
        )

    def update_prediction(self, prediction_id: int, **fields: Any) -> None:
        """Change fields of one prediction (e.g. ``mislabeling``, which the bulk import ignores)."""
        self._call(
            f"update prediction {prediction_id}", self._sdk.predictions.update, int(prediction_id), **fields
        )

    def delete_prediction(self, prediction_id: int) -> None:
        """Delete one prediction."""
        self._call(f"delete prediction {prediction_id}", self._sdk.predictions.delete, int(prediction_id))

    def model_versions(self, project_id: int) -> dict[str, int]:
        """model_version → number of predictions in the project.

        Raw HTTP: the SDK 2.x has no call for ``/api/projects/{id}/model-versions/``.
        """
        body = self.request_json("GET", f"/api/projects/{int(project_id)}/model-versions/") or {}
        return {str(name): int(count or 0) for name, count in dict(body).items()}

    def delete_model_version(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of ``model_version`` in one request; returns how many were deleted.

        Raw HTTP: the SDK 2.x has no call for it, and deleting one prediction at a time costs ~0.08 s each.
        """
        body = self.request_json(
            "DELETE",
            f"/api/projects/{int(project_id)}/model-versions/",
            json={"model_version": model_version},
        )
        return int((body or {}).get("deleted_predictions", 0))

    # ------------------------------------------------------------------ views
    def list_views(self, project_id: int) -> list[dict[str, Any]]:
        """The project's Data Manager tabs (``id``, ``data`` with ``title``, ``filters``, ``ordering``)."""
        return _plain(
            self._call(f"view list of project {project_id}", self._sdk.views.list, project=int(project_id))
        )

    def create_view(self, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Create a Data Manager tab; returns it (with its ``id``)."""
        return _plain(
            self._call(
                f"create view in project {project_id}",
                self._sdk.views.create,
                project=int(project_id),
                data=data,
            )
        )

    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> None:
        """Replace a tab's title, filters and ordering."""
        self._call(
            f"update view {view_id}", self._sdk.views.update, str(view_id), project=int(project_id), data=data
        )

    def delete_view(self, view_id: int) -> None:
        """Delete a Data Manager tab."""
        self._call(f"delete view {view_id}", self._sdk.views.delete, str(view_id))

    # ------------------------------------------------------------------ annotations, users
    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], completed_by: int | None
    ) -> dict[str, Any]:
        """Add a new annotation to a task (credited to ``completed_by`` when given); returns it."""
        fields: dict[str, Any] = {"result": result}
        if completed_by is not None:
            fields["completed_by"] = int(completed_by)
        return _plain(
            self._call(
                f"create annotation on task {task_id}",
                self._sdk.annotations.create,
                int(task_id),
                not_found=f"task {int(task_id)} is not on Label Studio at {self.url} any more (deleted)",
                **fields,
            )
        )

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete one annotation (relabel deletes only annotations its ledger records as its own, and only
        while they are as it wrote them); NotFoundError when it is already gone."""
        self._call(
            f"delete annotation {annotation_id}",
            self._sdk.annotations.delete,
            int(annotation_id),
            not_found=f"annotation {int(annotation_id)} is not on Label Studio at {self.url} any more",
        )

    def user_emails(self) -> dict[int, str]:
        """User id → e-mail (for provenance); empty when the token's user may not list users."""
        try:
            users = _plain(self._call("list users", self._sdk.users.list))
        except ConnectorError:
            return {}
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in users}

    # ------------------------------------------------------------------ files
    def is_on_server(self, url: str) -> bool:
        """True if ``url`` is on this Label Studio's origin (scheme, host and port all equal)."""
        return _origin(url) == _origin(self.url)

    def absolute_url(self, path_or_url: str) -> str:
        """``path_or_url`` resolved against the server URL (absolute URLs are returned unchanged)."""
        if urllib.parse.urlsplit(path_or_url).scheme:
            return path_or_url
        return urllib.parse.urljoin(self.url + "/", path_or_url.lstrip("/"))

    def download_file(self, path_or_url: str, anonymous: requests.Session) -> tuple[int, bytes]:
        """(HTTP status, body) of a file a task refers to: with the token on this server (uploads under
        ``/data/upload/…``, which no SDK call serves), through ``anonymous`` (no credentials) anywhere else.

        Raises ConnectorError (this server) or ``requests.RequestException`` (elsewhere) only when the host
        cannot be reached; an HTTP error status is returned, not raised."""
        url = self.absolute_url(path_or_url)
        if self.is_on_server(url):
            path = urllib.parse.urlsplit(url)._replace(scheme="", netloc="").geturl()

            def fetch() -> httpx.Response:
                http = self._sdk._client_wrapper.httpx_client
                return http.request(path.lstrip("/"), method="GET")

            response = self._call(f"GET {_shorten(path)}", fetch)
            return response.status_code, response.content
        answer = anonymous.get(url, timeout=DEFAULT_TIMEOUT_SECONDS)
        return answer.status_code, answer.content

    def browser_url(self, project_id: int, view_id: int | None = None) -> str:
        """Where a person opens the project (or one of its tabs) in the Label Studio web UI."""
        url = f"{self.url}/projects/{int(project_id)}/data"
        return url if view_id is None else f"{url}?tab={int(view_id)}"


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ConnectorError(
            f"Label Studio answered {what} with non-JSON content; is {URL_ENV} the server's base URL?"
        ) from None


def _body_detail(body: Any) -> str:
    if isinstance(body, dict):
        return _shorten(str(body.get("detail") or body.get("validation_errors") or body), 300)
    return _shorten(str(body), 300)


def parse_server_datetime(moment: str) -> datetime:
    """A Data Manager datetime value (see :data:`LABEL_STUDIO_DATETIME_FORMAT`) as an aware UTC datetime."""
    return datetime.strptime(moment, LABEL_STUDIO_DATETIME_FORMAT).replace(tzinfo=UTC)


_WARNED_KEY_FILES: set[str] = set()


def read_api_key(path: str | os.PathLike[str] | None = None, env: str = API_KEY_ENV) -> str:
    """The API token from the file ``path`` (whitespace stripped) or else from ``$env``.

    The token is checked by :func:`validate_api_key` (one line of printable ASCII; a byte-order mark is
    dropped). ConnectorError with one line (that never shows the token) when neither holds a usable one.
    A file that other users may read gets a one-line warning on stderr (not an error).
    """
    if path is not None:
        location = os.path.expanduser(os.fspath(path))
        try:
            with open(location, encoding="utf-8-sig") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                raw = handle.read()
        except OSError as error:
            raise ConnectorError(f"cannot read the API key file {path}: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise ConnectorError(f"the API key file {path} is not text; put only the token in it") from None
        key = validate_api_key(raw, f"the API key file {path}")
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and location not in _WARNED_KEY_FILES:
            _WARNED_KEY_FILES.add(location)  # once per process (the nightly run reads it per project)
            print(
                f"relabel: warning: the API key file {path} can be read by other users "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}",
                file=sys.stderr,
            )
        return key
    raw = os.environ.get(env, "")
    if not raw.strip():
        raise ConnectorError(
            f"no Label Studio API token: set {env} or pass --api-key-file PATH "
            "(Account & Settings → Personal Access Token in Label Studio)"
        )
    return validate_api_key(raw, f"${env}")
