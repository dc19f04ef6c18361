"""The Label Studio connector: what the rest of relabel calls to read a project and write its queue.

:class:`LabelStudioConnector` puts the package's pieces behind one object: :func:`pull_project`
(pull), :class:`ReviewQueue` (push), :func:`sync` / :func:`undo` (after review), :func:`reviewed_labels`
(decisions recorded by sync, for ``relabel compare``) and the nightly change probe. It keeps what a pull read
(the project's JSON and the tasks' data) so the push after it asks the server for neither again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import connectors.label_studio.changes as changes
import connectors.label_studio.review as review
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.ledger import Ledger
from connectors.label_studio.owned import OwnedPredictions, owned_review_project, owned_view
from connectors.label_studio.pull import PulledProject, PullMethod, pull_project
from connectors.label_studio.push import ReviewQueue
from connectors.label_studio.queue_plan import (
    AcceptPreview,
    AcceptResult,
    PushResult,
    SyncResult,
    UndoResult,
)
from relabel.dataset import FlaggedItem, LabeledDataset

DEFAULT_LEASE_WAIT_SECONDS = 60.0


class LabelStudioConnector:
    """One Label Studio server, read and written the way relabel does.

    ``url``/``api_key`` default to ``$LABEL_STUDIO_URL``/``$LABEL_STUDIO_API_KEY``; ``client`` replaces the
    real :class:`LabelStudioClient` (a test's in-memory fake implements the same methods).
    """

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, client: LabelStudioClient | None = None
    ) -> None:
        self.client = client if client is not None else LabelStudioClient(url, api_key)
        self.ledger = Ledger(self.client)
        self.lease_wait_seconds = DEFAULT_LEASE_WAIT_SECONDS
        self._held = threading.local()  # the projects whose lease this thread holds through this object
        self._pulled: dict[tuple[int, str | None], PulledProject] = {}

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.client.url

    def __repr__(self) -> str:
        return f"LabelStudioConnector(url={self.url!r}, token_type={self.token_type!r})"

    @property
    def token_type(self) -> str:
        """``"legacy"``, ``"refresh"`` (a Personal Access Token) or ``"access"``."""
        return getattr(self.client, "token_type", "unknown")

    def pull(
        self,
        project_id: int,
        control: str | None = None,
        progress: bool = False,
        method: PullMethod = "export",
    ) -> LabeledDataset:
        """The project's labeled tasks as a :class:`LabeledDataset` (see ``connectors.label_studio.pull``)."""
        pulled = pull_project(self.client, project_id, control=control, progress=progress, method=method)
        self._pulled[(int(project_id), control)] = pulled
        return pulled.dataset

    def push(
        self,
        project_id: int,
        items: Sequence[FlaggedItem],
        *,
        mode: str = "view",
        method: str = "self_influence",
        control: str | None = None,
        progress: bool = False,
        write_mislabeling: bool = True,
        basis: str | None = None,
    ) -> PushResult:
        """Send ``items`` for review (see :mod:`connectors.label_studio.queue_plan` for the two modes);
        ``basis``: why this many are flagged (named when a later push changes the queue's size)."""
        pulled = self._pulled.get((int(project_id), control))
        queue = ReviewQueue(
            self.client, ledger=self.ledger, progress=progress, write_mislabeling=write_mislabeling
        )
        with self.lease(project_id, "audit"):
            return queue.push(
                project_id,
                items,
                mode=mode,
                method=method,
                control=control,
                project=None if pulled is None else pulled.project,
                target=None if pulled is None else pulled.target,
                task_data=None if pulled is None else pulled.task_data,
                basis=basis,
            )

    @contextmanager
    def lease(self, project_id: int, command: str) -> Iterator[None]:
        """The project's write lease (see :mod:`connectors.label_studio.ledger`) for a ``with`` block.

        Re-entrant in one thread: a command that took the lease to read (e.g. an audit re-checking what it
        pulled) and then calls :meth:`push` holds it once, not twice.
        """
        held: set[int] = self._held.__dict__.setdefault("projects", set())
        if int(project_id) in held:
            yield
            return
        with self.ledger.lease(project_id, command, wait_seconds=self.lease_wait_seconds):
            held.add(int(project_id))
            try:
                yield
            finally:
                held.discard(int(project_id))

    def read_mark(self, project_id: int) -> changes.ProjectMark:
        """The project's counts and the server's clock now; take it before reading what a write decides on."""
        return changes.read_mark(self.client, project_id)

    def changed_since(self, project_id: int, mark: changes.ProjectMark) -> bool:
        """Whether the project may have changed since ``mark`` (see :func:`changes.changed_since`); asked
        under the write lease, before writing."""
        return changes.changed_since(self.client, project_id, mark)

    def sync(self, project_id: int, *, control: str | None = None, progress: bool = False) -> SyncResult:
        """Copy reviewers' decisions back as new annotations (see :func:`review.sync`)."""
        with self.lease(project_id, "sync"):
            return review.sync(self.client, self.ledger, project_id, control=control, progress=progress)

    def accept(
        self, project_id: int, tier: str, confirm: Callable[[int], bool], *, control: str | None = None
    ) -> AcceptResult:
        """Accept the suggestions of one tier in bulk as new annotations (see :func:`review.accept`)."""
        with self.lease(project_id, "accept"):
            return review.accept(self.client, self.ledger, project_id, tier, confirm, control=control)

    def accept_preview(self, project_id: int, tiers: Sequence[str]) -> AcceptPreview:
        """What :meth:`accept` would accept, per tier (see :func:`review.accept_preview`); writes nothing."""
        return review.accept_preview(self.client, self.ledger, project_id, tiers)

    def pending_in_tier(self, project_id: int, tier: str) -> int:
        """How many untouched review tasks of ``tier`` the project's review queue holds."""
        entry, _ = owned_review_project(self.client, self.ledger, project_id)
        return (
            0
            if entry is None
            else len(review.pending_in_tier(self.client, int(entry.data["object_id"]), tier))
        )

    def undo(
        self,
        project_id: int,
        *,
        force: bool = False,
        save_backup: Callable[[int, list[dict[str, Any]]], str] | None = None,
    ) -> UndoResult:
        """Remove what relabel added to the project and nobody changed (see :func:`review.undo`);
        ``save_backup(review project id, tasks)`` saves a review project's reviewer work before ``force``
        deletes it and returns where."""
        with self.lease(project_id, "undo"):
            return review.undo(self.client, self.ledger, project_id, force=force, save_backup=save_backup)

    def review_project(self, project_id: int) -> dict[str, Any] | None:
        """relabel's review project of ``project_id`` as its ledger records it (None if there is none)."""
        entry, _ = owned_review_project(self.client, self.ledger, project_id)
        return None if entry is None else self.client.get_project(int(entry.data["object_id"]))

    def queue_intact(self, project_id: int, mode: str) -> bool:
        """Whether the queue relabel's ledger records for the project still exists (the review project, or
        the view with all of relabel's predictions)."""
        if mode == "project":
            return owned_review_project(self.client, self.ledger, project_id)[0] is not None
        owned = OwnedPredictions(self.client, self.ledger, project_id)
        recorded = (
            {int(i) for ids in (owned.entry.data.get("prediction_ids") or {}).values() for i in ids}
            if owned.entry
            else set()
        )
        present = {int(p["id"]) for p in owned.current()}
        return (
            owned_view(self.client, self.ledger, project_id)[0] is not None
            and bool(recorded)
            and recorded <= present
        )

    def reviewed_labels(self, project_id: int, control: str | None = None) -> dict[int, tuple[str, str]]:
        """task id → (label before review, reviewer's label), from decisions recorded by sync."""
        return review.reviewed_labels(self.client, project_id, control)

    def server_clock(self, project_id: int) -> tuple[str | None, int | None]:
        """(the server's current time as a Data Manager datetime, the project's task count)."""
        return self.client.server_time_and_task_count(project_id)

    def tasks_changed_since(self, project_id: int, watermark: str) -> list[int] | None:
        """Ids of tasks updated after ``watermark`` (None: too many to list)."""
        return changes.tasks_changed_since(self.client, project_id, watermark)

    def annotations_saved_since(self, project_id: int, watermark: str, task_ids: Sequence[int]) -> bool:
        """Whether a person created a task or saved an annotation among ``task_ids`` after ``watermark``."""
        return changes.annotations_saved_since(self.client, project_id, watermark, task_ids)

    def project_url(self, project_id: int) -> str:
        """The project's page in the Label Studio web UI (its Data Manager)."""
        return self.client.browser_url(project_id)

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call by path, for set-up scripts (the demo's seeding); see ``LabelStudioClient``."""
        return self.client.request_json(method, path, **kwargs)
