"""Randomized scenarios against a real Label Studio server: reviewers' actions (submit, skip, draft, edit,
delete a task) interleaved with relabel's commands (audit, nightly, sync, accept, undo, undo --force), many
seeds. Afterwards, and after every undo, nothing a person made or changed is gone, and relabel's own
additions are exactly what its ledger records.

Each seed runs ``STEPS`` random steps on its own project (the first an audit); the invariants are checked
after every undo and at the end. ``SCENARIOS`` seeds (``RELABEL_SCENARIOS`` overrides) keep the file at
about two to three minutes on two shared CPU cores.
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.label_studio import LabelStudioConnector
from relabel.commands.undo import backup_writer
from relabel.errors import RelabelError
from relabel.nightly import EXIT_OK, run_nightly
from relabel.pipeline import run_audit
from relabel.settings import AuditSettings
from tests.label_studio_seeding import annotate, choice_result, create_draft, export_tasks, get_json
from tests.test_review_queue import CLASSES, _seed

SCENARIOS = int(os.environ.get("RELABEL_SCENARIOS", "5"))
STEPS = 12
ACTIONS = {  # action → weight
    "audit": 3,
    "nightly": 1,
    "sync": 2,
    "accept": 2,
    "undo": 1,
    "undo_force": 1,
    "submit": 3,
    "skip": 1,
    "draft": 2,
    "edit": 2,
    "delete_task": 1,
}


def _headers(server: Any) -> dict[str, str]:
    return {"Authorization": f"Token {server.legacy_token}"}


def _region(annotation: dict[str, Any]) -> str:
    return str(((annotation.get("result") or [{}])[0]).get("id") or "")


@dataclass
class Scenario:
    """One seed's project, what people did in it (to check nothing of theirs is lost) and what ran."""

    server: Any
    connector: LabelStudioConnector
    project_id: int
    folder: Path
    rng: random.Random
    human_source: dict[int, tuple[int, str]] = field(default_factory=dict)  # annotation → (task, content)
    decisions: dict[int, int] = field(default_factory=dict)  # review annotation → source task
    review_work: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, id) → source task
    deleted_tasks: set[int] = field(default_factory=set)
    backed_up: set[tuple[str, int]] = field(default_factory=set)
    trace: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ reading the server
    def source_tasks(self) -> dict[int, dict[str, Any]]:
        return {int(t["id"]): t for t in export_tasks(self.server, self.project_id)}

    def review_id(self) -> int | None:
        review = self.connector.review_project(self.project_id)
        return None if review is None else int(review["id"])

    def review_tasks(self) -> list[dict[str, Any]]:
        review_id = self.review_id()
        return [] if review_id is None else export_tasks(self.server, review_id)

    def remember_human(self, task_id: int, annotation: dict[str, Any]) -> None:
        content = json.dumps([annotation["result"], annotation["was_cancelled"]], sort_keys=True)
        self.human_source[int(annotation["id"])] = (task_id, content)

    # ------------------------------------------------------------------ reviewer actions
    def open_review_task(self) -> dict[str, Any] | None:
        live = [
            t
            for t in self.review_tasks()
            if not t["annotations"] and int(t["data"]["relabel_source_task"]) not in self.deleted_tasks
        ]
        return self.rng.choice(sorted(live, key=lambda t: t["id"])) if live else None

    def submit(self) -> str:
        task = self.open_review_task()
        if task is None:
            return "no open review task"
        label = self.rng.choice(CLASSES)
        annotation_id = annotate(self.server, task["id"], choice_result(label))
        self.decisions[annotation_id] = int(task["data"]["relabel_source_task"])
        self.review_work[("annotation", annotation_id)] = int(task["data"]["relabel_source_task"])
        return f"review task {task['id']} decided {label}"

    def skip(self) -> str:
        task = self.open_review_task()
        if task is None:
            return "no open review task"
        annotation_id = annotate(self.server, task["id"], [], cancelled=True)
        self.review_work[("annotation", annotation_id)] = int(task["data"]["relabel_source_task"])
        return f"review task {task['id']} skipped"

    def draft(self) -> str:
        task = self.open_review_task()
        if task is None:
            return "no open review task"
        draft_id = create_draft(self.server, task["id"], choice_result(self.rng.choice(CLASSES)))
        self.review_work[("draft", draft_id)] = int(task["data"]["relabel_source_task"])
        return f"draft on review task {task['id']}"

    def edit(self) -> str:
        """A person edits any annotation of the source project (an original, an accepted suggestion, a
        synced decision): from then on it is theirs."""
        candidates = [
            (int(task["id"]), a)
            for task in self.source_tasks().values()
            for a in task["annotations"]
            if a["result"]
        ]
        if not candidates:
            return "nothing to edit"
        task_id, annotation = self.rng.choice(sorted(candidates, key=lambda c: c[1]["id"]))
        result = [{**annotation["result"][0], "value": {"choices": [self.rng.choice(CLASSES)]}}]
        response = requests.patch(
            f"{self.server.url}/api/annotations/{annotation['id']}/",
            headers=_headers(self.server),
            json={"result": result},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:300]
        self.remember_human(task_id, response.json())
        return f"annotation {annotation['id']} on task {task_id} edited ({_region(annotation) or 'human'})"

    def delete_task(self) -> str:
        if len(self.deleted_tasks) >= 2:
            return "enough tasks deleted"
        task_id = self.rng.choice(sorted(self.source_tasks()))
        response = requests.delete(
            f"{self.server.url}/api/tasks/{task_id}/", headers=_headers(self.server), timeout=60
        )
        assert response.status_code == 204, response.text[:300]
        self.deleted_tasks.add(task_id)
        return f"source task {task_id} deleted"

    # ------------------------------------------------------------------ relabel commands
    def settings(self) -> AuditSettings:
        return AuditSettings(top=5, queue="project", features="tfidf")

    def audit(self) -> str:
        result = run_audit(self.connector, self.project_id, self.settings(), progress=False)
        return f"audit flagged {result.n_flagged}"

    def nightly(self) -> str:
        config = self.folder / "audit.toml"
        config.write_text(
            f'state_dir = "{self.folder / "state"}"\n[defaults]\nurl = "{self.server.url}"\ntop = 5\n'
            f'queue = "project"\nfeatures = "tfidf"\n[[projects]]\nname = "p"\nproject = {self.project_id}\n'
        )
        stream = io.StringIO()
        code = run_nightly(config, stream=stream, connector_factory=lambda _: self.connector)
        assert code == EXIT_OK, stream.getvalue()
        return "nightly: " + stream.getvalue().split("status=")[-1].split()[0]

    def sync(self) -> str:
        if self.review_id() is None:
            with pytest.raises(RelabelError, match="no relabel review project"):
                self.connector.sync(self.project_id)
            return "sync: no review project"
        result = self.connector.sync(self.project_id)
        return f"sync added {result.annotations_added}, {result.source_gone_total} on deleted tasks"

    def accept(self) -> str:
        tiers = sorted({t["data"]["relabel_tier"] for t in self.review_tasks() if not t["annotations"]})
        if not tiers:
            return "accept: nothing pending"
        result = self.connector.accept(self.project_id, self.rng.choice(tiers), lambda n: True)
        return f"accepted {len(result.accepted_task_ids)}"

    def undo(self, force: bool = False) -> str:
        review_before = self.review_tasks()
        try:
            result = self.connector.undo(
                self.project_id,
                force=force,
                save_backup=backup_writer(self.folder / "backups", self.project_id),
            )
        except RelabelError as refused:
            assert not force and "not undone:" in str(refused)
            assert self.review_tasks() == review_before  # nothing deleted
            return "undo refused: " + str(refused).split(" holds ")[1].split(" (")[0]
        for path in result.backups:
            saved = json.loads(Path(path).read_text())["tasks"]
            self.backed_up |= {("annotation", a["id"]) for t in saved for a in t["annotations"]}
            self.backed_up |= {("draft", d["id"]) for t in saved for d in t["drafts"]}
        self.check()
        assert self.review_id() is None
        return f"undo{' --force' if force else ''}: kept {len(result.kept)} kinds"

    def undo_force(self) -> str:
        return self.undo(force=True)

    # ------------------------------------------------------------------ the invariants
    def check(self) -> None:
        """Nothing a person made or changed is gone; relabel's additions are exactly its ledger's."""
        tasks = self.source_tasks()
        present = {int(a["id"]): (int(t["id"]), a) for t in tasks.values() for a in t["annotations"]}
        for annotation_id, (task_id, content) in self.human_source.items():
            if task_id in tasks:
                assert annotation_id in present, f"annotation {annotation_id} on task {task_id} is gone"
                _, now = present[annotation_id]
                assert json.dumps([now["result"], now["was_cancelled"]], sort_keys=True) == content
        review_present = {("annotation", a["id"]) for t in self.review_tasks() for a in t["annotations"]}
        review_present |= {("draft", d["id"]) for t in self.review_tasks() for d in t["drafts"]}
        synced = {_region(a) for _, a in present.values()}
        for key, source in self.review_work.items():
            kept = key in review_present or key in self.backed_up or source not in tasks
            copied = key[0] == "annotation" and f"relabel-sync-{key[1]}" in synced
            assert kept or copied, f"{key} on source task {source} is lost"
        records = [
            record
            for entry in self.connector.ledger.entries(self.project_id, "accepted")
            for record in entry.data.get("annotations") or []
        ]
        accepted_here = {i for i, (_, a) in present.items() if _region(a).startswith("relabel-accept-")}
        recorded = {int(record["id"]) for record in records}
        assert accepted_here - set(self.human_source) <= recorded  # every one relabel wrote is recorded
        for record in records:  # and every one recorded is there (unless its task was deleted)
            assert int(record["task"]) not in tasks or int(record["id"]) in accepted_here
        for region in (r for r in synced if r.startswith("relabel-sync-")):
            assert int(region.removeprefix("relabel-sync-")) in self.decisions  # a reviewer's decision
        predictions = get_json(self.server, "/api/predictions/", project=self.project_id)
        assert not [p for p in predictions if str(p["model_version"]).startswith("relabel-")]
        projects = get_json(self.server, "/api/projects/", page_size=1000)["results"]
        marked = [p for p in projects if f"[relabel-review-of:{self.project_id}]" in (p["description"] or "")]
        review_id = self.review_id()
        assert [int(p["id"]) for p in marked] == ([] if review_id is None else [review_id])


@pytest.mark.parametrize("seed", range(SCENARIOS))
def test_random_reviewer_and_relabel_steps_lose_nothing_and_leave_only_what_the_ledger_says(
    label_studio: Any, tmp_path: Path, seed: int
) -> None:
    project_id, _ = _seed(label_studio, n_tasks=16, title=f"scenario {seed}")
    scenario = Scenario(
        label_studio,
        LabelStudioConnector(label_studio.url, label_studio.legacy_token),
        project_id,
        tmp_path,
        random.Random(seed),
    )
    for task_id, task in scenario.source_tasks().items():
        for annotation in task["annotations"]:
            scenario.remember_human(task_id, annotation)
    steps = ["audit", *scenario.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()), k=STEPS - 1)]
    try:
        for step, action in enumerate(steps):
            outcome = getattr(scenario, action)()  # an undo checks the invariants right after itself
            scenario.trace.append(f"{step}: {action}: {outcome}")
        scenario.check()
    except AssertionError as error:
        raise AssertionError(f"seed {seed} after {scenario.trace}: {error}") from None
    print(f"seed {seed}: " + " | ".join(scenario.trace))
