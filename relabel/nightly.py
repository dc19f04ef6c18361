"""The nightly audit: every project listed in a TOML file, one log line each, without spamming reviewers.

Run from cron as ``scripts/nightly_audit.py audit.toml`` or ``relabel audit --config audit.toml``.

Configuration (TOML; the API token is never in it: ``api_key_file`` or the environment variable named by
``api_key_env``, default ``LABEL_STUDIO_API_KEY``)::

    state_dir = "/var/lib/relabel"              # state files and the lock (created if missing)
    log_file = "/var/log/relabel/nightly.log"   # optional; log lines also go to stdout

    [defaults]                                  # optional; every key may be overridden per project
    url = "http://localhost:8080"
    api_key_file = "/etc/relabel/token"         # or api_key_env = "LABEL_STUDIO_API_KEY"
    model = "logistic"                          # logistic | mlp | cnn
    method = "self_influence"                   # self_influence | loss | margin | random
    top_fraction = 0.05                         # or top = 50
    queue = "view"                              # view | project
    report_dir = "reports/{name}"               # {name}, {project} are filled in

    [[projects]]
    name = "digits"                             # used in log lines and file names
    project = 3                                 # the Label Studio project id
    # control = "label", image_size = 8, l2 = 1e-3, seed = 0 (optional)

State: one JSON file per project in ``state_dir`` (``<name>.state.json``). For every task relabel flagged it
records when, the label at that time and the label's annotation (id, updated_at). On the next run:

* a flagged task whose label, annotation id or annotation ``updated_at`` changed since has been *reviewed*
  (a reviewer corrected it, re-saved it to confirm it, or ``relabel sync`` recorded a decision as a new
  annotation): it is not flagged again while its label stays the one the review left;
* if the label of a reviewed task changes later, it is a new label and may be flagged again;
* a task that is still flagged and untouched stays in the queue (the push is idempotent: nothing new).

Pulling only what changed: the model is fitted on every label, so a run that ranks needs all of them. What a
run can skip is the whole audit when nothing changed. Before pulling, one cheap Data Manager query asks
Label Studio how many tasks of the project have ``updated_at`` later than the end of the last run (Label
Studio bumps a task's ``updated_at`` whenever one of its annotations or predictions is saved) and how many
tasks the project holds. When no task changed, none was added or deleted, and the project's settings here
are unchanged, the run logs ``unchanged`` and pulls, fits and pushes nothing. The watermark is the server's
own clock (the HTTP ``Date`` of a request made a second after relabel's last write), so clock skew between
the machines does not matter and relabel's own predictions never count as changes. If the query fails,
the full pull runs. After a full pull, when the labels and their annotations (ids and ``updated_at``) are
exactly those of the last run, nothing is fitted or pushed either. ``force=True`` overrides both.
A dry run (``push=False``) ranks and writes the report but neither pushes nor changes the state.

Overlapping runs: ``state_dir/nightly.lock`` is held with ``fcntl.flock`` for the whole run; a second run
that cannot take it exits with :data:`EXIT_LOCKED` and a one-line message, having pushed nothing.

Exit codes: 0 every project ok; 1 at least one project failed (each failure has its one-line reason in the
log; the other projects still ran); 2 the configuration is unusable; 3 another run holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from relabel.errors import InputError, RelabelError

EXIT_OK = 0
EXIT_PROJECT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_LOCKED = 3
LOCK_FILE_NAME = "nightly.lock"
DEFAULT_API_KEY_ENV = "LABEL_STUDIO_API_KEY"
FORBIDDEN_KEYS = ("api_key", "token", "api_token", "key", "password")
PROJECT_KEYS = {
    "name",
    "url",
    "project",
    "model",
    "method",
    "top",
    "top_fraction",
    "queue",
    "report_dir",
    "control",
    "image_size",
    "l2",
    "seed",
    "api_key_file",
    "api_key_env",
    "explain_top",
}


class LockedError(RelabelError):
    """Another nightly run holds the lock."""


@dataclass
class ProjectConfig:
    """One project of the nightly audit (see the module docstring for the TOML keys)."""

    name: str
    url: str
    project: int
    model: str = "logistic"
    method: str = "self_influence"
    top: int | None = None
    top_fraction: float | None = None
    queue: str = "view"
    report_dir: str | None = None
    control: str | None = None
    image_size: int | None = None
    l2: float = 1e-3
    seed: int = 0
    api_key_file: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    explain_top: int = 3

    def settings_fingerprint(self) -> str:
        """A hash of what changes a ranking (model, method, how many, control...), not of where logs go."""
        relevant = {
            key: value
            for key, value in asdict(self).items()
            if key not in ("name", "report_dir", "api_key_file", "api_key_env", "explain_top")
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def api_key(self) -> str:
        """The token from ``api_key_file`` or ``$api_key_env`` (never from the TOML, never logged)."""
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                key = path.read_text().strip()
            except OSError as error:
                raise RelabelError(f"cannot read api_key_file {path}: {error.strerror or error}") from None
            if not key:
                raise RelabelError(f"api_key_file {path} is empty")
            return key
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise RelabelError(f"no API token: set ${self.api_key_env} or give api_key_file")
        return key


@dataclass
class NightlyConfig:
    """The whole nightly file: where state lives, where logs go, and the projects."""

    state_dir: Path
    projects: list[ProjectConfig]
    log_file: Path | None = None
    source: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> NightlyConfig:
        """Read and validate a TOML file; raises InputError with one line naming the problem."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as error:
            raise InputError(f"cannot read the nightly config {path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"{path} is not valid TOML: {error}") from None
        return cls.from_dict(raw, source=path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path | None = None) -> NightlyConfig:
        where = str(source) if source else "nightly config"
        base = source.parent if source else Path.cwd()
        _refuse_secrets(raw, where)
        unknown_top = set(raw) - {"state_dir", "log_file", "defaults", "projects"}
        if unknown_top:
            raise InputError(f"{where}: unknown top-level key(s) {sorted(unknown_top)}")
        if "state_dir" not in raw:
            raise InputError(f"{where}: state_dir is missing (the folder for state files and the lock)")
        defaults = raw.get("defaults", {})
        projects_raw = raw.get("projects", [])
        if not isinstance(projects_raw, list) or not projects_raw:
            raise InputError(f"{where}: no [[projects]] listed")
        projects = []
        seen: set[str] = set()
        for position, entry in enumerate(projects_raw, start=1):
            merged = {**defaults, **entry}
            unknown = set(merged) - PROJECT_KEYS
            if unknown:
                raise InputError(f"{where}: project #{position}: unknown key(s) {sorted(unknown)}")
            for required in ("url", "project"):
                if required not in merged:
                    raise InputError(f"{where}: project #{position}: {required} is missing")
            merged.setdefault("name", f"project-{merged['project']}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(merged["name"])):
                raise InputError(
                    f"{where}: project #{position}: name {merged['name']!r} may hold only letters, digits, "
                    "'.', '_' and '-' (it names the state file)"
                )
            if merged["name"] in seen:
                raise InputError(f"{where}: two projects are named {merged['name']!r}")
            seen.add(merged["name"])
            project = ProjectConfig(**merged)
            _validate_project(project, f"{where}: project {project.name!r}")
            if project.api_key_file and not Path(project.api_key_file).expanduser().is_absolute():
                project.api_key_file = str(base / project.api_key_file)
            projects.append(project)
        state_dir = Path(raw["state_dir"]).expanduser()
        log_file = Path(raw["log_file"]).expanduser() if raw.get("log_file") else None
        return cls(
            state_dir=state_dir if state_dir.is_absolute() else base / state_dir,
            projects=projects,
            log_file=None if log_file is None else (log_file if log_file.is_absolute() else base / log_file),
            source=source,
        )


def _refuse_secrets(raw: Any, where: str) -> None:
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in FORBIDDEN_KEYS:
                raise InputError(
                    f"{where}: {key!r} is not allowed in the config: keep the token out of the TOML "
                    "(use api_key_file or api_key_env)"
                )
            _refuse_secrets(value, where)
    elif isinstance(raw, list):
        for value in raw:
            _refuse_secrets(value, where)


def _validate_project(project: ProjectConfig, where: str) -> None:
    if project.model not in ("logistic", "mlp", "cnn"):
        raise InputError(f"{where}: model must be logistic, mlp or cnn; got {project.model!r}")
    if project.method not in ("self_influence", "loss", "margin", "random"):
        raise InputError(
            f"{where}: method must be self_influence, loss, margin or random; got {project.method!r}"
        )
    if project.queue not in ("view", "project"):
        raise InputError(f"{where}: queue must be view or project; got {project.queue!r}")
    if project.top is not None and project.top_fraction is not None:
        raise InputError(f"{where}: give top or top_fraction, not both")
    if not isinstance(project.project, int):
        raise InputError(f"{where}: project must be an integer id; got {project.project!r}")


# ------------------------------------------------------------------------------------------------ state
@dataclass
class ProjectState:
    """What relabel remembers about one project between runs (stored as JSON).

    ``items``: task id (as a string) → {``status`` "flagged" | "reviewed", ``label`` and ``annotation_id``
    and ``updated_at`` (the label's annotation when last seen), ``first_flagged_at``, ``last_flagged_at``,
    ``reviewed_at``, ``reviewed_label``}. ``data_fingerprint``/``settings_fingerprint``: the last
    successful run's inputs; ``last_run_at``: ISO time (UTC).
    """

    path: Path
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_fingerprint: str | None = None
    settings_fingerprint: str | None = None
    last_run_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    server_watermark: str | None = None
    task_number: int | None = None

    @classmethod
    def load(cls, path: Path) -> ProjectState:
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise RelabelError(
                f"state file {path} is unreadable ({error}); move it away to start afresh"
            ) from None
        return cls(
            path,
            items=dict(raw.get("items", {})),
            data_fingerprint=raw.get("data_fingerprint"),
            settings_fingerprint=raw.get("settings_fingerprint"),
            last_run_at=raw.get("last_run_at"),
            history=list(raw.get("history", []))[-30:],
            server_watermark=raw.get("server_watermark"),
            task_number=raw.get("task_number"),
        )

    def save(self) -> None:
        """Write atomically (temporary file + rename), so a crash never leaves half a state file."""
        payload = {
            "items": self.items,
            "data_fingerprint": self.data_fingerprint,
            "settings_fingerprint": self.settings_fingerprint,
            "last_run_at": self.last_run_at,
            "history": self.history[-30:],
            "server_watermark": self.server_watermark,
            "task_number": self.task_number,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True))
        os.replace(temporary, self.path)


def _label_records(dataset: Any) -> dict[str, dict[str, Any]]:
    """task id → {label, annotation_id, updated_at} of every labeled task in a pulled dataset."""
    provenance = dataset.provenance.reindex(dataset.ids)
    annotation_ids = (
        provenance["annotation_id"].tolist() if "annotation_id" in provenance else [None] * len(dataset)
    )
    updated = provenance["updated_at"].tolist() if "updated_at" in provenance else [None] * len(dataset)
    records = {}
    for task_id, label, annotation_id, updated_at in zip(
        dataset.ids.tolist(), dataset.labels.tolist(), annotation_ids, updated, strict=True
    ):
        records[str(task_id)] = {
            "label": str(label),
            "annotation_id": None if pd.isna(annotation_id) else int(annotation_id),
            "updated_at": None if pd.isna(updated_at) else pd.Timestamp(updated_at).isoformat(),
        }
    return records


LABEL_STUDIO_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what the Data Manager's Datetime filters parse


def server_clock(connector: Any, project_id: int) -> tuple[str | None, int | None]:
    """(the server's current time from the HTTP ``Date`` header, as a Data Manager filter value; the
    project's task count). Either is None when the server does not say."""
    from email.utils import parsedate_to_datetime

    response = connector.request("GET", f"/api/projects/{int(project_id)}")
    try:
        task_number = int(response.json().get("task_number"))
    except (ValueError, TypeError, AttributeError):
        task_number = None
    date = response.headers.get("Date")
    if not date:
        return None, task_number
    moment = parsedate_to_datetime(date).astimezone(UTC)
    return moment.strftime(LABEL_STUDIO_DATETIME_FORMAT), task_number


def _updated_after_filter(watermark: str) -> str:
    return json.dumps(
        {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": watermark,
                    }
                ],
            }
        }
    )


def tasks_changed_since(
    connector: Any, project_id: int, watermark: str, limit: int = 1000
) -> list[int] | None:
    """Ids of the project's tasks with ``updated_at`` > ``watermark`` (one Data Manager query), or None
    when there are more than ``limit`` of them."""
    response = connector.request(
        "GET",
        "/api/tasks/",
        params={
            "project": int(project_id),
            "page_size": limit,
            "fields": "task_only",
            "query": _updated_after_filter(watermark),
        },
    )
    body = response.json()
    if int(body.get("total", 0)) > limit:
        return None
    return [int(task["id"]) for task in body.get("tasks", [])]


def _utc(stamp: str) -> pd.Timestamp:
    moment = pd.Timestamp(stamp)
    return moment.tz_localize(UTC) if moment.tzinfo is None else moment.tz_convert(UTC)


def annotations_saved_since(connector: Any, project_id: int, watermark: str, task_ids: list[int]) -> bool:
    """Whether any of these tasks was created, or had an annotation created or saved, after ``watermark``.

    Used at the end of a run: relabel writes predictions (which bump a task's ``updated_at``) but never
    annotations, so an annotation saved after the run started is a person's change during the run.
    """
    if not task_ids:
        return False
    tasks = connector.request(
        "GET",
        f"/api/projects/{int(project_id)}/export",
        params={"exportType": "JSON", "download_all_tasks": "true", "ids[]": task_ids},
    ).json()
    threshold = pd.Timestamp(datetime.strptime(watermark, LABEL_STUDIO_DATETIME_FORMAT)).tz_localize(UTC)
    for task in tasks:
        stamps = [task.get("created_at")]
        for annotation in task.get("annotations") or []:
            stamps += [annotation.get("created_at"), annotation.get("updated_at")]
        if any(_utc(stamp) > threshold for stamp in stamps if stamp):
            return True
    return False


def data_fingerprint(records: dict[str, dict[str, Any]]) -> str:
    """A hash of every (task, label, annotation id, updated_at): equal ⇔ no label was touched."""
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class ReviewBookkeeping:
    """Outcome of comparing the state with a fresh pull: who was reviewed, who may be flagged."""

    reviewed_now: list[int]
    excluded: set[int]
    relabelled_since_review: list[int]


def update_reviews(state: ProjectState, records: dict[str, dict[str, Any]], now: str) -> ReviewBookkeeping:
    """Apply the review rules of the module docstring to ``state`` (in place) for a fresh pull."""
    reviewed_now: list[int] = []
    relabelled: list[int] = []
    for task_id, entry in list(state.items.items()):
        current = records.get(task_id)
        if current is None:  # task deleted or no longer labeled: forget it
            del state.items[task_id]
            continue
        if entry["status"] == "flagged":
            touched = any(current[key] != entry.get(key) for key in ("label", "annotation_id", "updated_at"))
            if touched:
                entry.update(status="reviewed", reviewed_at=now, reviewed_label=current["label"], **current)
                reviewed_now.append(int(task_id))
        elif entry["status"] == "reviewed" and current["label"] != entry.get("reviewed_label"):
            del state.items[task_id]  # the label changed after the review: a new label, fair game again
            relabelled.append(int(task_id))
    excluded = {int(task_id) for task_id, entry in state.items.items() if entry["status"] == "reviewed"}
    return ReviewBookkeeping(reviewed_now, excluded, relabelled)


# ------------------------------------------------------------------------------------------------ lock
@contextmanager
def nightly_lock(state_dir: Path) -> Iterator[Path]:
    """Hold ``state_dir/nightly.lock`` (fcntl.flock, exclusive, non-blocking) for the ``with`` block.

    Raises :class:`LockedError` when another process (or another open of the file) holds it. The lock is
    released by the kernel when the process dies, so a crashed run never blocks the next one.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE_NAME
    handle = open(path, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockedError(
                f"another nightly audit is running (lock {path} held by {holder}); this run pushes nothing"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {_now()}")
        handle.flush()
        yield path
    finally:
        handle.close()


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------------ one project
@dataclass
class ProjectOutcome:
    """What one project's run did (one log line: :meth:`log_line`)."""

    name: str
    ok: bool
    status: str
    details: str
    seconds: float
    new_flags: int = 0
    pushed: bool = False

    def log_line(self) -> str:
        return (
            f"{_now()} relabel-nightly project={self.name} status={self.status} {self.details} "
            f"({self.seconds:.1f} s)"
        )


ConnectorFactory = Callable[[ProjectConfig], Any]


def default_connector(project: ProjectConfig) -> Any:
    from connectors.label_studio import LabelStudioConnector

    return LabelStudioConnector(project.url, project.api_key())


def _unchanged_outcome(
    name: str, state: ProjectState, push: bool, started: float, describe: Callable[[int], str]
) -> ProjectOutcome:
    """Outcome of a run that found nothing new: saves the state (not on a dry run, which leaves it as the
    last real run left it) and reports ``describe(number of items still flagged)``."""
    if push:
        state.save()
    n_flagged = sum(1 for entry in state.items.values() if entry["status"] == "flagged")
    return ProjectOutcome(name, True, "unchanged", describe(n_flagged), time.perf_counter() - started)


def audit_project(
    project: ProjectConfig,
    state_dir: Path,
    *,
    connector_factory: ConnectorFactory = default_connector,
    force: bool = False,
    push: bool = True,
) -> ProjectOutcome:
    """One project: pull, skip if unchanged, fit + score, flag the top items not already reviewed, push,
    write the report and the state. Stage seconds go into the log line."""
    from connectors.label_studio_queue import ReviewQueue, flagged_items
    from relabel.audit import featurize, number_to_flag, ranking_table
    from relabel.ranking import SuspicionScorer
    from relabel.report import write_audit_report

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    now = _now()
    state = ProjectState.load(state_dir / f"{project.name}.state.json")
    connector = connector_factory(project)
    settings = project.settings_fingerprint()

    run_started_watermark, task_number = server_clock(connector, project.project)
    if not force and state.server_watermark and settings == state.settings_fingerprint:
        try:
            changed = tasks_changed_since(connector, project.project, state.server_watermark)
        except Exception:  # the probe is an optimisation: any doubt means a full run
            changed = None
        if changed == [] and task_number is not None and task_number == state.task_number:
            state.last_run_at = now
            return _unchanged_outcome(
                project.name,
                state,
                push,
                started,
                lambda n_flagged: (
                    f"tasks={task_number} flagged={n_flagged} new=0: no task changed since the "
                    "last run (Label Studio updated_at), not pulled, nothing pushed"
                ),
            )

    stage = time.perf_counter()
    dataset = connector.pull(project.project, control=project.control, progress=False)
    seconds["pull"] = time.perf_counter() - stage
    if len(dataset) == 0:
        raise InputError(f"project {project.project} has no labeled tasks")
    records = _label_records(dataset)
    fingerprint = data_fingerprint(records)
    if not force and fingerprint == state.data_fingerprint and settings == state.settings_fingerprint:
        state.last_run_at = now  # nothing written: every change after the run started is seen next time
        state.server_watermark, state.task_number = run_started_watermark, task_number
        return _unchanged_outcome(
            project.name,
            state,
            push,
            started,
            lambda n_flagged: (
                f"labeled={len(dataset)} flagged={n_flagged} new=0: pulled, but no label changed "
                "since the last run; nothing pushed"
            ),
        )

    bookkeeping = update_reviews(state, records, now)

    stage = time.perf_counter()
    X, image_shape = featurize(dataset, project.model, image_size=project.image_size)
    seconds["featurize"] = time.perf_counter() - stage
    stage = time.perf_counter()
    options: dict[str, Any] = {} if image_shape is None else {"image_shape": image_shape}
    scorer = SuspicionScorer(model=project.model, l2=project.l2, seed=project.seed, **options).fit(
        X, list(dataset.labels), classes=list(dataset.classes)
    )
    seconds["fit"] = time.perf_counter() - stage
    stage = time.perf_counter()
    methods = (project.method,) if project.method == "loss" else (project.method, "loss")
    scores = scorer.scores(methods)
    seconds["score"] = time.perf_counter() - stage

    n_flagged = number_to_flag(len(dataset), project.top, project.top_fraction)
    table = ranking_table(dataset, scores, project.method, n_flagged)
    eligible = ~table["task_id"].isin(bookkeeping.excluded).to_numpy()
    candidates = table[eligible]
    items = flagged_items(
        candidates["task_id"].to_numpy(),
        candidates[project.method].to_numpy(),
        candidates["suggested_label"].tolist(),
        candidates["current_label"].tolist(),
        top=min(n_flagged, len(candidates)),
    )
    flagged_ids = [item.task_id for item in items]
    table["flagged"] = table["task_id"].isin(flagged_ids)
    table["reviewed_before"] = table["task_id"].isin(bookkeeping.excluded)

    push_summary = "dry run: nothing pushed"
    if push:
        stage = time.perf_counter()
        result = ReviewQueue(connector, progress=False).push(
            project.project, items, mode=project.queue, method=project.method, control=project.control
        )
        seconds["push"] = time.perf_counter() - stage
        created = result.predictions_created if project.queue == "view" else result.review_tasks_created
        push_summary = f"queue={project.queue} pushed_new={created} url={result.url}"

    previously_flagged = {int(k) for k, v in state.items.items() if v["status"] == "flagged"}
    for task_id in list(state.items):
        if state.items[task_id]["status"] == "flagged" and int(task_id) not in flagged_ids:
            del state.items[task_id]  # dropped out of the top: no longer in the queue
    for item in items:
        key = str(item.task_id)
        entry = state.items.get(key, {"first_flagged_at": now})
        entry.update(status="flagged", last_flagged_at=now, rank=item.rank, **records[key])
        state.items[key] = entry
    new_flags = len(set(flagged_ids) - previously_flagged)

    report_note = ""
    if project.report_dir:
        stage = time.perf_counter()
        report_dir = Path(project.report_dir.format(name=project.name, project=project.project))
        paths = write_audit_report(
            report_dir,
            dataset,
            scorer,
            table,
            method=project.method,
            n_flagged=len(items),
            explain_top=project.explain_top,
            title=f"relabel nightly audit — {project.name} (project {project.project})",
            summary={
                "new since last run": new_flags,
                "reviewed, not re-flagged": len(bookkeeping.excluded),
                "run at": now,
            },
        )
        seconds["report"] = time.perf_counter() - stage
        report_note = f" report={paths['report_html']}"

    state.data_fingerprint = fingerprint
    state.settings_fingerprint = settings
    state.last_run_at = now
    state.server_watermark, state.task_number = run_started_watermark, task_number
    if push and run_started_watermark is not None:
        # relabel's own predictions bumped updated_at: move the watermark past them unless a person saved an
        # annotation (or added a task) while the run was going, in which case the next run must look again.
        time.sleep(1.1)  # the Date header counts whole seconds: let relabel's own writes fall before it
        run_ended_watermark, ended_task_number = server_clock(connector, project.project)
        try:
            during_run = tasks_changed_since(connector, project.project, run_started_watermark)
            person_changed = during_run is None or annotations_saved_since(
                connector, project.project, run_started_watermark, during_run
            )
        except Exception:
            person_changed = True
        if not person_changed and ended_task_number == task_number:
            state.server_watermark = run_ended_watermark
    state.history.append(
        {"at": now, "flagged": len(items), "new": new_flags, "reviewed_now": len(bookkeeping.reviewed_now)}
    )
    if push:  # a dry run leaves the state as the last real run left it
        state.save()
    timing = ",".join(f"{name}={value:.1f}s" for name, value in seconds.items())
    details = (
        f"labeled={len(dataset)} flagged={len(items)} new={new_flags} "
        f"reviewed_since_last_run={len(bookkeeping.reviewed_now)} "
        f"excluded_as_reviewed={len(bookkeeping.excluded)} "
        f"{push_summary}{report_note} stages[{timing}]"
    )
    return ProjectOutcome(project.name, True, "ok", details, time.perf_counter() - started, new_flags, push)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())  # one line


def run_nightly(
    config_path: str | Path,
    *,
    force: bool = False,
    push: bool = True,
    connector_factory: ConnectorFactory = default_connector,
    stream: TextIO | None = None,
) -> int:
    """Run every project of the nightly config; returns the exit code (see the module docstring).

    One log line per project goes to ``stream`` (default stdout) and, if configured, to ``log_file``.
    A failing project is logged with its one-line reason and the others still run.
    """
    stream = stream or sys.stdout
    try:
        config = NightlyConfig.load(config_path)
    except RelabelError as error:
        print(f"relabel-nightly: error: {error}", file=stream, flush=True)
        return EXIT_BAD_CONFIG

    def log(line: str) -> None:
        print(line, file=stream, flush=True)
        if config.log_file is not None:
            config.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(config.log_file, "a") as handle:
                handle.write(line + "\n")

    try:
        with nightly_lock(config.state_dir):
            failures = 0
            for project in config.projects:
                started = time.perf_counter()
                secrets: list[str] = []
                with suppress(RelabelError):  # a missing token is reported by audit_project itself
                    secrets.append(project.api_key())
                try:
                    outcome = audit_project(
                        project, config.state_dir, connector_factory=connector_factory, force=force, push=push
                    )
                except Exception as error:  # one project's failure must not stop the others
                    failures += 1
                    reason = (
                        str(error) if isinstance(error, RelabelError) else f"{type(error).__name__}: {error}"
                    )
                    outcome = ProjectOutcome(
                        project.name,
                        False,
                        "failed",
                        f"reason={_redact(reason, secrets)}",
                        time.perf_counter() - started,
                    )
                log(outcome.log_line())
    except LockedError as error:
        log(f"{_now()} relabel-nightly status=locked {error}")
        return EXIT_LOCKED
    return EXIT_PROJECT_FAILED if failures else EXIT_OK
