"""The nightly audit: every project listed in a TOML file, one log line each, without spamming reviewers.

Run from cron as ``scripts/nightly_audit.py audit.toml`` or ``relabel audit --config audit.toml``.

Configuration (TOML; the API token is never in it: ``api_key_file`` or the environment variable named by
``api_key_env``, default ``LABEL_STUDIO_API_KEY``)::

    state_dir = "/var/lib/relabel"              # state files and the lock (created if missing)
    log_file = "/var/log/relabel/nightly.log"   # optional; log lines also go to stdout

    [defaults]                                  # optional; every key may be overridden per project
    url = "http://localhost:8080"
    api_key_file = "/etc/relabel/token"         # or api_key_env = "LABEL_STUDIO_API_KEY"
    model = "auto"                              # auto | logistic | mlp | cnn
    method = "self_influence"                   # self_influence | loss | margin | random
    top_fraction = 0.05                         # or top = 50
    queue = "view"                              # view | project
    report_dir = "reports/{name}"               # {name}, {project} are filled in

    [[projects]]
    name = "digits"                             # used in log lines and file names
    project = 3                                 # the Label Studio project id
    # control = "label", image_size = 8, l2 = 1e-3, seed = 0, ... (optional)

The audit keys are the fields of :class:`relabel.settings.AuditSettings` (the same settings as the
``relabel audit`` flags); each project runs the one pipeline, :func:`relabel.pipeline.audit_dataset`.

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

import copy
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from relabel.errors import InputError, LockedError, RelabelError
from relabel.output import append_private_line, check_writable_folder, private_folder, write_private_text
from relabel.settings import AuditSettings

EXIT_OK = 0
EXIT_PROJECT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_LOCKED = 3
LOCK_FILE_NAME = "nightly.lock"
DEFAULT_API_KEY_ENV = "LABEL_STUDIO_API_KEY"
FORBIDDEN_KEYS = ("api_key", "token", "api_token", "key", "password")
LOCATION_KEYS = ("name", "url", "project", "report_dir", "api_key_file", "api_key_env")
PROJECT_KEYS = frozenset(LOCATION_KEYS) | frozenset(AuditSettings.keys())


SAFE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"


@dataclass
class ProjectConfig:
    """One project of the nightly audit: where it is, how to log in, where its report goes, and the audit
    settings (see the module docstring for the TOML keys)."""

    name: str
    url: str
    project: int
    settings: AuditSettings = field(default_factory=AuditSettings)
    report_dir: str | None = None
    api_key_file: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV

    @classmethod
    def from_entry(cls, entry: dict[str, Any], where: str) -> ProjectConfig:
        """A project from its merged TOML table (defaults + the project's own keys)."""
        unknown = set(entry) - PROJECT_KEYS
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)}")
        for required in ("url", "project"):
            if required not in entry:
                raise InputError(f"{where}: {required} is missing")
        if not isinstance(entry["project"], int) or isinstance(entry["project"], bool):
            raise InputError(f"{where}: project must be an integer id; got {entry['project']!r}")
        if not isinstance(entry["url"], str):
            raise InputError(f'{where}: url must be a string such as "http://localhost:8080"')
        from connectors.label_studio.client import server_base_url

        server_base_url(entry["url"], f"{where}: url")  # no credentials, query or bad port; never echoed
        for key in ("name", "report_dir", "api_key_file", "api_key_env"):
            if key in entry and not isinstance(entry[key], str):
                raise InputError(f"{where}: {key} must be a string; got a TOML {_toml_type(entry[key])}")
        location = {key: entry[key] for key in LOCATION_KEYS if key in entry}
        location.setdefault("name", f"project-{entry['project']}")
        settings = AuditSettings.from_mapping(
            {key: value for key, value in entry.items() if key not in LOCATION_KEYS},
            f"{where} ({location['name']})",
        )
        try:
            return cls(settings=settings, **location)
        except InputError as error:
            raise InputError(f"{where}: {error}") from None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(SAFE_NAME, self.name):
            raise InputError(
                f"name {self.name!r} may hold only letters, digits, '.', '_' and '-', and may not start "
                "with '.' or '-' (it names the state file and the report folder)"
            )
        if self.report_dir is not None:
            self.report_path()  # refuse a bad template now, not in the middle of the run

    def report_path(self) -> Path | None:
        """``report_dir`` with ``{name}`` and ``{project}`` filled in (no other placeholder, no ``..``
        part: a report never lands outside the folder the template names); None without ``report_dir``."""
        if self.report_dir is None:
            return None
        template = str(self.report_dir)
        filled = template.replace("{name}", self.name).replace("{project}", str(int(self.project)))
        if "{" in filled or "}" in filled:
            raise InputError(
                f"report_dir {template!r}: only {{name}} and {{project}} may be filled in (no other braces)"
            )
        if ".." in Path(filled).parts or ".." in Path(template).parts:
            raise InputError(f"report_dir {template!r} may not hold a '..' part")
        return Path(filled).expanduser()

    def settings_fingerprint(self) -> str:
        """A hash of what changes which items are flagged (the audit settings, the project), not of logs."""
        key = json.dumps([self.url, self.project, self.settings.fingerprint()])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def api_key(self) -> str:
        """The token from ``api_key_file`` or ``$api_key_env`` (never from the TOML, never logged)."""
        from connectors.label_studio.client import read_api_key

        return read_api_key(self.api_key_file, self.api_key_env)


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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
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
        projects_raw = raw.get("projects", [])
        if not isinstance(projects_raw, list) or not projects_raw:
            raise InputError(f"{where}: no [[projects]] listed")
        tables = {
            "defaults": raw.get("defaults", {}),
            **{f"[[projects]] #{n}": e for n, e in enumerate(projects_raw, 1)},
        }
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise InputError(f"{where}: {name} must be a table of keys; got a TOML {_toml_type(table)}")
        for key in ("state_dir", "log_file"):
            if key in raw and not isinstance(raw[key], str):
                raise InputError(
                    f"{where}: {key} must be a string (a folder path); got a TOML {_toml_type(raw[key])}"
                )
        projects = [
            ProjectConfig.from_entry({**raw.get("defaults", {}), **entry}, f"{where}: project #{position}")
            for position, entry in enumerate(projects_raw, start=1)
        ]
        names = [project.name for project in projects]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise InputError(f"{where}: two projects are named {duplicated[0]!r}")
        for project in projects:
            if project.api_key_file and not Path(project.api_key_file).expanduser().is_absolute():
                project.api_key_file = str(base / project.api_key_file)
        return cls(
            state_dir=_absolute(Path(raw["state_dir"]).expanduser(), base),
            projects=projects,
            log_file=_absolute(Path(raw["log_file"]).expanduser(), base) if raw.get("log_file") else None,
            source=source,
        )


def _toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for messages."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "date or time")


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


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
        """Write atomically (temporary file + rename; mode 0600): a crash never leaves half a state file."""
        payload = {
            "items": self.items,
            "data_fingerprint": self.data_fingerprint,
            "settings_fingerprint": self.settings_fingerprint,
            "last_run_at": self.last_run_at,
            "history": self.history[-30:],
            "server_watermark": self.server_watermark,
            "task_number": self.task_number,
        }
        write_private_text(self.path, json.dumps(payload, indent=1, sort_keys=True))


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
    private_folder(state_dir, "state_dir")
    path = state_dir / LOCK_FILE_NAME
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
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


def _nothing_changed(
    connector: Any, project: ProjectConfig, state: ProjectState, task_number: int | None
) -> bool:
    """The cheap probe: no task changed since the last run's watermark and none was added or deleted."""
    if not state.server_watermark or project.settings_fingerprint() != state.settings_fingerprint:
        return False
    try:
        changed = connector.tasks_changed_since(project.project, state.server_watermark)
    except Exception:  # the probe is an optimisation: any doubt means a full run
        return False
    return changed == [] and task_number is not None and task_number == state.task_number


def _advance_watermark(
    connector: Any,
    project: ProjectConfig,
    state: ProjectState,
    started_at: str | None,
    task_number: int | None,
) -> None:
    """After a push: move the watermark past relabel's own predictions (which bump ``updated_at``) unless a
    person saved an annotation or added a task while the run went on; then the next run must look again."""
    state.server_watermark, state.task_number = started_at, task_number
    if started_at is None:
        return
    time.sleep(1.1)  # the Date header counts whole seconds: let relabel's own writes fall before it
    ended_at, ended_task_number = connector.server_clock(project.project)
    try:
        during_run = connector.tasks_changed_since(project.project, started_at)
        person_changed = during_run is None or connector.annotations_saved_since(
            project.project, started_at, during_run
        )
    except Exception:
        person_changed = True
    if not person_changed and ended_task_number == task_number:
        state.server_watermark = ended_at


def _record_flags(
    state: ProjectState,
    flagged_ids: list[int],
    records: dict[str, dict[str, Any]],
    now: str,
    previously: set[int],
) -> int:
    """Write the run's flagged items into the state (``previously``: those flagged before this run);
    returns how many are newly flagged."""
    for task_id in list(state.items):
        if state.items[task_id]["status"] == "flagged" and int(task_id) not in flagged_ids:
            del state.items[task_id]  # dropped out of the top: no longer in the queue
    for rank, task_id in enumerate(flagged_ids, start=1):
        key = str(task_id)
        entry = state.items.get(key, {"first_flagged_at": now})
        entry.update(status="flagged", last_flagged_at=now, rank=rank, **records[key])
        state.items[key] = entry
    return len(set(flagged_ids) - previously)


def _run_pipeline(
    connector: Any,
    project: ProjectConfig,
    dataset: Any,
    state: ProjectState,
    records: dict[str, dict[str, Any]],
    now: str,
    seconds: dict[str, float],
    push: bool,
    mark: Any = None,
) -> tuple[Any, ReviewBookkeeping, int]:
    """The pipeline on a pulled project, with the items reviewed since earlier runs excluded; records the
    flags in ``state``. Returns (the audit result, the review bookkeeping, how many flags are new).

    ``mark`` (taken before the pull): if the project changed by the time the write lease is held, it is
    pulled again under the lease and the review rules are applied afresh to that pull (``records`` is
    updated in place)."""
    from relabel.pipeline import audit_dataset, pull_labeled

    before = copy.deepcopy(state.items)
    found = {"bookkeeping": update_reviews(state, records, now)}

    def reread() -> tuple[Any, set[int]]:
        fresh = pull_labeled(connector, project.project, project.settings.control)
        records.clear()
        records.update(_label_records(fresh))
        state.items = copy.deepcopy(before)
        found["bookkeeping"] = update_reviews(state, records, now)
        return fresh, found["bookkeeping"].excluded

    def flagged_before() -> set[int]:  # after the review rules, before this run's flags
        return {int(k) for k, v in state.items.items() if v["status"] == "flagged"}

    result = audit_dataset(
        connector,
        project.project,
        dataset,
        project.settings,
        push=push,
        report_dir=project.report_path(),
        excluded=found["bookkeeping"].excluded,
        seconds=seconds,
        report_title=f"relabel nightly audit — {project.name} (project {project.project})",
        report_summary=lambda flagged: {
            "new since last run": len(set(flagged) - flagged_before()),
            "reviewed, not re-flagged": len(found["bookkeeping"].excluded),
            "run at": now,
        },
        mark=mark,
        reread=reread,
    )
    previously = flagged_before()
    return (
        result,
        found["bookkeeping"],
        _record_flags(state, result.flagged_task_ids, records, now, previously),
    )


def audit_project(
    project: ProjectConfig,
    state_dir: Path,
    *,
    connector_factory: ConnectorFactory = default_connector,
    force: bool = False,
    push: bool = True,
) -> ProjectOutcome:
    """One project: skip if unchanged, else pull, run the pipeline with the reviewed items excluded, and
    record the state. Stage seconds go into the log line."""
    from relabel.pipeline import pull_labeled, read_mark, stage_timer

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    now = _now()
    state = ProjectState.load(state_dir / f"{project.name}.state.json")
    connector = connector_factory(project)
    started_at, task_number = connector.server_clock(project.project)
    flagged_before = any(entry["status"] == "flagged" for entry in state.items.values())
    if flagged_before and push and not connector.queue_intact(project.project, project.settings.queue):
        force = True  # the queue relabel made is gone (undone or deleted by hand): rebuild it
    if not force and _nothing_changed(connector, project, state, task_number):
        state.last_run_at = now
        return _unchanged_outcome(
            project.name,
            state,
            push,
            started,
            lambda n: (
                f"tasks={task_number} flagged={n} new=0: no task changed since the last run (Label Studio "
                "updated_at), not pulled, nothing pushed"
            ),
        )
    mark = read_mark(connector, project.project) if push else None
    with stage_timer(seconds, "pull"):
        dataset = pull_labeled(connector, project.project, project.settings.control)
    records = _label_records(dataset)
    fingerprint = data_fingerprint(records)
    settings = project.settings_fingerprint()
    if not force and fingerprint == state.data_fingerprint and settings == state.settings_fingerprint:
        state.last_run_at = now  # nothing written: every change after the run started is seen next time
        state.server_watermark, state.task_number = started_at, task_number
        return _unchanged_outcome(
            project.name,
            state,
            push,
            started,
            lambda n: (
                f"labeled={len(dataset)} flagged={n} new=0: pulled, but no label changed since the last run; "
                "nothing pushed"
            ),
        )
    result, bookkeeping, new_flags = _run_pipeline(
        connector, project, dataset, state, records, now, seconds, push, mark
    )
    fingerprint = data_fingerprint(records)  # of the pull the push decided on (re-read under the lease)
    state.data_fingerprint, state.settings_fingerprint, state.last_run_at = fingerprint, settings, now
    if push:
        _advance_watermark(connector, project, state, started_at, task_number)
        state.history.append(
            {
                "at": now,
                "flagged": result.n_flagged,
                "new": new_flags,
                "reviewed_now": len(bookkeeping.reviewed_now),
            }
        )
        state.save()  # a dry run leaves the state as the last real run left it
    return ProjectOutcome(
        project.name,
        True,
        "ok",
        _details(result, new_flags, bookkeeping),
        time.perf_counter() - started,
        new_flags,
        push,
    )


def _details(result: Any, new_flags: int, bookkeeping: ReviewBookkeeping) -> str:
    """The key=value part of a project's log line."""
    if result.push is None:
        push_summary = "dry run: nothing pushed"
    else:
        created = (
            result.push.predictions_created
            if result.settings.queue == "view"
            else result.push.review_tasks_created
        )
        push_summary = f"queue={result.settings.queue} pushed_new={created} url={result.url}"
        if result.settings.queue == "project":  # the flagged items' review tasks (a skip is no review)
            push = result.push
            push_summary += f" queue_reviewed={push.already_reviewed} queue_skipped={push.skipped}"
            push_summary += f" queue_pending={push.pending}"
    report = f" report={result.report_path}" if result.report_path is not None else ""
    skipped = sorted(getattr(result, "skipped", None) or {})
    if skipped:  # labeled tasks whose input could not be read (the summary of `relabel audit` names why)
        report += f" skipped_unreadable={len(skipped)}(task ids {','.join(map(str, skipped[:10]))})"
    timing = ",".join(f"{name}={value:.1f}s" for name, value in result.seconds.items())
    return (
        f"labeled={result.n_labeled} flagged={result.n_flagged} new={new_flags} "
        f"reviewed_since_last_run={len(bookkeeping.reviewed_now)} "
        f"excluded_as_reviewed={len(bookkeeping.excluded)} {push_summary}{report} stages[{timing}]"
    )


def _redact(text: str, secrets: list[str]) -> str:
    """One log line with every secret hidden (:func:`connectors.label_studio.client.redact`)."""
    from connectors.label_studio.client import redact

    return " ".join(redact(text, secrets).split())  # one line


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
        if config.log_file is not None:  # before any project runs, not after the first push
            check_writable_folder(config.log_file.parent, "log_file")
    except RelabelError as error:
        print(f"relabel-nightly: error: {error}", file=stream, flush=True)
        return EXIT_BAD_CONFIG

    def log(line: str) -> None:
        print(line, file=stream, flush=True)
        if config.log_file is not None:
            append_private_line(config.log_file, line)

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
    except RelabelError as error:  # state_dir or log_file cannot be created or written
        print(f"relabel-nightly: error: {_redact(str(error), [])}", file=stream, flush=True)
        return EXIT_BAD_CONFIG
    return EXIT_PROJECT_FAILED if failures else EXIT_OK
