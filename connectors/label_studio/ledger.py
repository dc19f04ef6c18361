"""The ledger: what relabel created on a Label Studio server, and which run is writing a project's queue.

relabel changes or deletes only objects it can prove it created. A title, a description marker or a
``model_version`` prefix is no proof: Label Studio's "duplicate project" copies a review project's
description, and a team's own model may be called ``relabel-something``. So relabel records the *ids* of
what it creates (review projects, Data Manager views, predictions) on the server, in its ledger, and
touches nothing else.

Where: one project on the server titled :data:`LEDGER_TITLE` (``relabel ledger`` before, still recognised)
whose description holds the marker ``[relabel-ledger:<its own project id>]``. The proof of ownership is
that marker: only relabel writes a project's own id into its description after creating it, and a copy of
the project gets a new id, so its marker no longer matches and the copy is never taken for the ledger. The
title only narrows the search; a ledger found under the old title is renamed (it is relabel's, proven by
its marker). Its title and description tell a person who sees it in the project list what it is and that
deleting it makes ``relabel undo`` forget what relabel made. Each entry is one task of the ledger project;
its data:

=====================  =====================================================================================
``kind``               ``review_project``, ``view``, ``predictions`` or ``lease``
``source_project``     the audited project the entry belongs to
``object_id``          the created review project or view (None while it is being created)
``object_created_at``  the review project's ``created_at``: checked again before deleting it
``nonce``              random text written into the object too (the review project's description, the
                       view's data), so an object created by a run that crashed before recording its id is
                       found again and adopted, not duplicated
``model_version``      predictions: the version relabel wrote; ``prediction_ids`` the ids of its predictions;
                       ``pending_since`` (server time) while an import is under way
``owner``              lease: who holds it (random id, host, pid, command), ``expires_at`` (server time)
``queue_size``         review project or view: how many items the last push queued, ``queue_basis`` why
                       (its top setting); ``skip_queue_set``: relabel set the review project's skip setting
=====================  =====================================================================================

The lease makes one writer per project across processes and machines: a run adds a lease entry, then
reads all live leases of the project; the lease with the smallest task id wins (Label Studio hands out
task ids in creation order, so every run sees the same winner). A loser removes its entry and waits or
gives up with :class:`relabel.errors.LockedError`. A holder renews its lease while it works; the lease of a
crashed run expires after ``ttl`` seconds (server clock, so machines' clocks do not matter).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.label_studio.client import LabelStudioClient
from relabel.errors import LockedError

LEDGER_TITLE = "relabel ledger (keep: relabel undo needs it)"  # ≤ 50 characters (Label Studio's limit)
OLD_LEDGER_TITLES = ("relabel ledger",)  # titles of ledgers made by earlier versions, still found
LEDGER_CONFIG = '<View><Header value="relabel ledger entry"/><Text name="entry" value="$summary"/></View>'
LEDGER_DESCRIPTION = (
    "Created by relabel (the label-quality audit) to record what it made on this server: review projects, "
    "Data Manager tabs, predictions and accepted suggestions. `relabel undo` removes exactly what is "
    "recorded here, and relabel never changes or deletes anything else. If you delete this project, "
    "relabel forgets what it made: `relabel undo` can then no longer remove it (you would delete those "
    "by hand). Do not edit, label or duplicate it."
)
OLD_LEDGER_DESCRIPTIONS = (
    "relabel's record of the review projects, views and predictions it created, and of the runs writing "
    "a review queue now. relabel deletes only what is recorded here. Do not edit or duplicate it.",
)
DEFAULT_LEASE_SECONDS = 300.0
LEASE_POLL_SECONDS = 2.0


def ledger_marker(ledger_id: int) -> str:
    """The description marker that proves a project is relabel's ledger (it names the project's own id)."""
    return f"[relabel-ledger:{int(ledger_id)}]"


def new_nonce() -> str:
    """Random text that ties a created object to its ledger entry."""
    return secrets.token_hex(8)


@dataclass
class Entry:
    """One ledger entry: the ledger task's id and its data (see the module docstring for the keys)."""

    task_id: int
    data: dict[str, Any]


class Ledger:
    """relabel's ledger on one server (created on first write)."""

    def __init__(self, client: LabelStudioClient) -> None:
        self.client = client
        self._project_id: int | None = None

    # ------------------------------------------------------------------ the ledger project
    def project_id(self, create: bool) -> int | None:
        """The ledger project's id (None when there is none and ``create`` is False)."""
        if self._project_id is None:
            self._project_id = self._find()
            if self._project_id is None and create:
                self._project_id = self._create()
        return self._project_id

    def _find(self) -> int | None:
        """The ledger's id: the smallest id of a project titled as a ledger (now or before) whose
        description holds its own id's marker (the proof, see the module docstring). A ledger still under
        an old title or description gets the current ones."""
        titles = (LEDGER_TITLE, *OLD_LEDGER_TITLES)
        valid = {
            int(project["id"]): project
            for project in self.client.list_projects()
            if project.get("title") in titles
            and ledger_marker(int(project["id"])) in (project.get("description") or "")
        }
        if not valid:
            return None
        own_id = min(valid)
        wanted = f"{LEDGER_DESCRIPTION} {ledger_marker(own_id)}"
        if valid[own_id].get("title") != LEDGER_TITLE or valid[own_id].get("description") != wanted:
            self.client.update_project(own_id, title=LEDGER_TITLE, description=wanted)
        return own_id

    def _create(self) -> int:
        """Create the ledger (in two steps: its id is known only once it exists). A run killed between the
        steps leaves an empty ledger without its marker; the next run completes that one."""
        unfinished = [
            int(project["id"])
            for project in self.client.list_projects()
            if project.get("title") in (LEDGER_TITLE, *OLD_LEDGER_TITLES)
            and (project.get("description") or "") in (LEDGER_DESCRIPTION, *OLD_LEDGER_DESCRIPTIONS)
        ]
        unfinished = [project_id for project_id in unfinished if not self.client.export_tasks(project_id)]
        if unfinished:
            own_id = min(unfinished)
        else:
            created = self.client.create_project(
                title=LEDGER_TITLE, description=LEDGER_DESCRIPTION, label_config=LEDGER_CONFIG
            )
            own_id = int(created["id"])
        self.client.update_project(
            own_id, title=LEDGER_TITLE, description=f"{LEDGER_DESCRIPTION} {ledger_marker(own_id)}"
        )
        winner = self._find()  # two runs may have created one each at once: the smaller id wins
        if winner is not None and winner != own_id:
            self.client.delete_project(own_id)  # ours, just made, still empty
            return winner
        return own_id

    # ------------------------------------------------------------------ entries
    def entries(self, source_project: int, kind: str | None = None) -> list[Entry]:
        """The entries of ``source_project`` (of one ``kind`` if given), oldest first."""
        ledger_id = self.project_id(create=False)
        if ledger_id is None:
            return []
        found = []
        for task in self.client.export_tasks(ledger_id):
            data = task.get("data") or {}
            if data.get("source_project") == int(source_project) and kind in (None, data.get("kind")):
                found.append(Entry(int(task["id"]), dict(data)))
        return sorted(found, key=lambda entry: entry.task_id)

    def add(self, source_project: int, kind: str, **fields: Any) -> Entry:
        """Record a new entry; returns it with its task id."""
        data = {"kind": kind, "source_project": int(source_project), **fields}
        data["summary"] = f"{kind} of project {source_project}"
        ledger_id = self.project_id(create=True)
        assert ledger_id is not None
        (task_id,) = self.client.import_tasks(ledger_id, [{"data": data}])
        return Entry(task_id, data)

    def save(self, entry: Entry) -> None:
        """Write an entry's changed data back."""
        self.client.update_task_data(entry.task_id, entry.data)

    def remove(self, entry: Entry) -> None:
        """Delete an entry."""
        ledger_id = self.project_id(create=False)
        if ledger_id is not None:
            self.client.delete_tasks(ledger_id, [entry.task_id])

    # ------------------------------------------------------------------ the lease
    @contextmanager
    def lease(
        self,
        source_project: int,
        command: str,
        *,
        wait_seconds: float = 0.0,
        ttl: float = DEFAULT_LEASE_SECONDS,
    ) -> Iterator[Entry]:
        """Hold the write lease of ``source_project`` for the ``with`` block (renewed every ``ttl/3``).

        Another run holding it: wait up to ``wait_seconds`` for it, then LockedError naming the holder.
        """
        entry = self._acquire(source_project, command, wait_seconds, ttl)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_until, args=(entry, source_project, ttl, stop), daemon=True
        )
        renewer.start()
        try:
            yield entry
        finally:
            stop.set()
            renewer.join(timeout=30)
            self.remove(entry)

    def _acquire(self, source_project: int, command: str, wait_seconds: float, ttl: float) -> Entry:
        deadline = time.monotonic() + wait_seconds
        while True:
            now = self.client.server_now(source_project)
            entry = self.add(
                source_project,
                "lease",
                owner=new_nonce(),
                host=socket.gethostname(),
                pid=os.getpid(),
                command=command,
                since=now.isoformat(),
                expires_at=(now + timedelta(seconds=ttl)).isoformat(),
            )
            holder = self._holder(source_project, now)
            if holder is None or holder.task_id == entry.task_id:
                return entry
            self.remove(entry)
            if time.monotonic() >= deadline:
                raise LockedError(_locked_message(source_project, holder.data))
            time.sleep(LEASE_POLL_SECONDS)

    def _holder(self, source_project: int, now: datetime) -> Entry | None:
        """The live lease with the smallest task id; leases of crashed runs (expired, or held by a process
        of this host that is gone) are removed."""
        live = []
        for lease in self.entries(source_project, "lease"):
            if datetime.fromisoformat(lease.data["expires_at"]) > now and not _dead_here(lease.data):
                live.append(lease)
            else:
                self.remove(lease)
        return live[0] if live else None

    def _renew_until(self, entry: Entry, source_project: int, ttl: float, stop: threading.Event) -> None:
        while not stop.wait(ttl / 3):
            try:
                now = self.client.server_now(source_project)
                entry.data["expires_at"] = (now + timedelta(seconds=ttl)).isoformat()
                self.save(entry)
            except Exception:  # a missed renewal is retried; the lease lasts ttl
                continue

    # ------------------------------------------------------------------ owned objects
    def owned(
        self,
        source_project: int,
        kind: str,
        exists: Callable[[Entry], bool],
        adopt: Callable[[Entry], Any] | None = None,
    ) -> tuple[Entry | None, list[Entry]]:
        """(the entry of the object of ``kind`` relabel made for ``source_project``, if it still exists;
        entries of further such objects that also exist, e.g. from a run that crashed mid-push).

        An entry whose object is still being created (``object_id`` None: a run crashed between creating
        and recording) is completed by ``adopt(entry)`` (which returns the object found by its nonce, or
        None). Entries whose object is gone (a person deleted it) are removed.
        """
        alive = []
        for entry in self.entries(source_project, kind):
            if entry.data.get("object_id") is None and adopt is not None:
                found = adopt(entry)
                if found is not None:
                    entry.data.update(object_id=int(found["id"]), object_created_at=found.get("created_at"))
                    self.save(entry)
            if entry.data.get("object_id") is not None and exists(entry):
                alive.append(entry)
            else:
                self.remove(entry)
        return (alive[0] if alive else None), alive[1:]


def _dead_here(lease: dict[str, Any]) -> bool:
    """Whether the lease's holder ran on this host and its process no longer exists."""
    if lease.get("host") != socket.gethostname() or lease.get("pid") is None:
        return False
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _locked_message(source_project: int, holder: dict[str, Any]) -> str:
    who = f"{holder.get('command')} on {holder.get('host')}, pid {holder.get('pid')}"
    who += f", since {holder.get('since')}"
    return (
        f"another relabel run ({who}) is writing project {source_project}'s review queue; run again when it "
        f"has finished (if it crashed, its lease expires at {holder.get('expires_at')})"
    )
