"""What relabel provably owns in a project, read from its ledger (:mod:`connectors.label_studio.ledger`):
its predictions, its Data Manager view, its review project; and the look-alikes it must leave alone.

Owning an object is not owning its content: a reviewer can edit an annotation relabel created (new result,
new ``updated_at``, same id). So for what relabel writes that a person can change (the annotations of
``relabel accept``), the ledger also records *what* it wrote (:func:`written_record`: a hash of the
result and the ``updated_at`` the server gave it), and :func:`still_as_written` tells whether it is
still exactly that; only then may relabel delete it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import connectors.label_studio.queue_plan as plan
from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.ledger import Entry, Ledger


def content_hash(value: Any) -> str:
    """A hash of a JSON value (an annotation's ``result``): sha256 of its canonical JSON (sorted keys),
    first 32 hex digits. Equal hashes ⇔ equal content (up to key order)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def written_record(annotation: dict[str, Any], task_id: int) -> dict[str, Any]:
    """What the ledger keeps of an annotation relabel just created: its id, its task, the hash of its result
    and its ``updated_at`` (both as the server answered the creation)."""
    return {
        "id": int(annotation["id"]),
        "task": int(task_id),
        "result_hash": content_hash(annotation.get("result") or []),
        "updated_at": annotation.get("updated_at"),
    }


def still_as_written(record: dict[str, Any], annotation: dict[str, Any]) -> bool:
    """Whether ``annotation`` (as the server holds it now) is still exactly what relabel wrote: same result
    hash and same ``updated_at`` (a person who re-saves it, even unchanged, makes it theirs)."""
    return (
        record.get("result_hash") is not None
        and content_hash(annotation.get("result") or []) == record["result_hash"]
        and str(annotation.get("updated_at")) == str(record.get("updated_at"))
    )


def nonce_marker(nonce: str) -> str:
    """The text written into a review project's description that ties it to its ledger entry."""
    return f"[relabel:{nonce}]"


class OwnedPredictions:
    """The predictions relabel created in one project (ids recorded in the ledger, one entry a project)."""

    def __init__(self, client: LabelStudioClient, ledger: Ledger, project_id: int) -> None:
        self.client, self.ledger, self.project_id = client, ledger, int(project_id)
        found = ledger.entries(project_id, "predictions")
        self.entry: Entry | None = found[0] if found else None
        for extra in found[1:]:  # one entry a project: merge any others
            self._ids_of(self.entry).update(_id_map(extra.data))
            ledger.remove(extra)

    def _ids_of(self, entry: Entry | None) -> dict[str, list[int]]:
        return {} if entry is None else entry.data.setdefault("prediction_ids", {})

    def current(self) -> list[dict[str, Any]]:
        """The project's predictions that relabel made (pending imports of a crashed run adopted)."""
        predictions = self.client.list_predictions(self.project_id)
        if self.entry is not None and self.entry.data.get("pending_since"):
            self._adopt(predictions)
        mine = {int(i) for ids in self._ids_of(self.entry).values() for i in ids}
        present = [p for p in predictions if int(p["id"]) in mine]
        gone = mine - {int(p["id"]) for p in present}
        if gone:  # deleted by someone else: no longer relabel's to manage
            self.forget(prediction_ids=sorted(gone))
        return present

    def _adopt(self, predictions: Sequence[dict[str, Any]]) -> None:
        assert self.entry is not None
        since = datetime.fromisoformat(self.entry.data["pending_since"])
        versions = set(self.entry.data.get("pending_versions") or [])
        ids = self._ids_of(self.entry)
        known = {int(i) for values in ids.values() for i in values}
        for prediction in predictions:
            created = datetime.fromisoformat(str(prediction.get("created_at")).replace("Z", "+00:00"))
            if (
                prediction.get("model_version") in versions
                and created >= since
                and int(prediction["id"]) not in known
            ):
                ids.setdefault(str(prediction["model_version"]), []).append(int(prediction["id"]))
        self.entry.data.update(pending_since=None, pending_versions=[])
        self.ledger.save(self.entry)

    def whole_versions(self) -> set[str]:
        """model_versions all of whose predictions in the project are relabel's (deletable in one request)."""
        counts = self.client.model_versions(self.project_id)
        ours = {version: len(set(ids)) for version, ids in self._ids_of(self.entry).items()}
        return {version for version, n in ours.items() if n and counts.get(version) == n}

    def forget(self, prediction_ids: Sequence[int] = (), versions: Sequence[str] = ()) -> None:
        """Drop deleted predictions from the record."""
        if self.entry is None:
            return
        ids = self._ids_of(self.entry)
        gone = {int(i) for i in prediction_ids}
        for version in list(ids):
            ids[version] = [] if version in versions else [i for i in ids[version] if int(i) not in gone]
            if not ids[version]:
                del ids[version]
        self.ledger.save(self.entry)

    @contextmanager
    def importing(self, versions: Sequence[str], tasks: Sequence[int]) -> Iterator[None]:
        """Record the predictions created inside the ``with`` block (of ``versions``, on ``tasks``).

        The import's start time is written first, so that a run killed during the import leaves a record
        from which the next run adopts what it made.
        """
        since = self.client.server_now(self.project_id) - timedelta(seconds=2)
        if self.entry is None:
            self.entry = self.ledger.add(self.project_id, "predictions", prediction_ids={})
        self.entry.data.update(pending_since=since.isoformat(), pending_versions=list(versions))
        self.ledger.save(self.entry)
        yield
        wanted_tasks = {int(task) for task in tasks}
        self._adopt(
            [p for p in self.client.list_predictions(self.project_id) if int(p["task"]) in wanted_tasks]
        )

    def remove_record(self) -> None:
        """Forget the entry (after every recorded prediction was deleted)."""
        if self.entry is not None:
            self.ledger.remove(self.entry)
            self.entry = None


def owned_view(
    client: LabelStudioClient, ledger: Ledger, project_id: int
) -> tuple[Entry | None, list[Entry]]:
    """relabel's Data Manager view of the project (and surplus ones a crashed run left), from the ledger."""
    views = {int(view["id"]): view for view in client.list_views(project_id)}

    def adopt(entry: Entry) -> dict[str, Any] | None:
        matching = [
            v
            for i, v in sorted(views.items())
            if (v.get("data") or {}).get("relabel_nonce") == entry.data["nonce"]
        ]
        return matching[0] if matching else None

    return ledger.owned(project_id, "view", lambda e: int(e.data["object_id"]) in views, adopt)


def owned_review_project(
    client: LabelStudioClient, ledger: Ledger, project_id: int
) -> tuple[Entry | None, list[Entry]]:
    """relabel's review project of the project (and surplus ones), from the ledger.

    A recorded review project counts only while its ``created_at`` is the one recorded when relabel
    created it.
    """
    projects = {int(p["id"]): p for p in client.list_projects()}

    def exists(entry: Entry) -> bool:
        found = projects.get(int(entry.data["object_id"]))
        return found is not None and found.get("created_at") == entry.data.get("object_created_at")

    def adopt(entry: Entry) -> dict[str, Any] | None:
        marker = nonce_marker(entry.data["nonce"])
        matching = [p for i, p in sorted(projects.items()) if marker in (p.get("description") or "")]
        return matching[0] if matching else None

    return ledger.owned(project_id, "review_project", exists, adopt)


def lookalikes(
    client: LabelStudioClient,
    project_id: int,
    owned_projects: set[int],
    owned_views: set[int],
    owned_predictions: set[int],
) -> list[str]:
    """Objects that look like relabel's (review marker, view title, ``relabel-`` model_version) but are not
    in its ledger: named here so that ``undo`` can say it left them alone."""
    found = [
        f"project {p['id']} {p.get('title')!r} (its description names project {project_id}'s review)"
        for p in client.list_projects()
        if plan.review_marker(project_id) in (p.get("description") or "")
        and int(p["id"]) not in owned_projects
    ]
    found += [
        f"view {v['id']} {plan.VIEW_TITLE!r} in project {project_id}"
        for v in client.list_views(project_id)
        if (v.get("data") or {}).get("title") == plan.VIEW_TITLE and int(v["id"]) not in owned_views
    ]
    foreign: dict[str, int] = {}
    for prediction in client.list_predictions(project_id):
        if (
            plan.is_relabel_version(prediction.get("model_version"))
            and int(prediction["id"]) not in owned_predictions
        ):
            foreign[str(prediction["model_version"])] = foreign.get(str(prediction["model_version"]), 0) + 1
    found += [f"{n} predictions with model_version {v!r} in project {project_id}" for v, n in foreign.items()]
    return found


def _id_map(data: dict[str, Any]) -> dict[str, list[int]]:
    return {str(k): [int(i) for i in v] for k, v in (data.get("prediction_ids") or {}).items()}
