"""The fast unit layer: the pipeline, the queue planning, sync, undo and the nightly run against the in-memory
Label Studio of ``tests/fake_label_studio.py`` (no server; seconds). Every behaviour here is also tested
against a real Label Studio in the other test files."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest

from connectors.label_studio import LabelStudioConnector
from connectors.label_studio.ledger import LEDGER_TITLE
from connectors.label_studio.queue_plan import SUGGESTION_MODEL_VERSION, VIEW_TITLE, plan_predictions
from relabel.errors import InputError, LockedError, RelabelError
from relabel.nightly import EXIT_OK, run_nightly
from relabel.pipeline import run_audit
from relabel.scorer import SuspicionScorer
from relabel.selection import (
    flagged_items,
    normalised_suspicion,
    number_to_flag,
    suspicion_order,
    suspicion_ranks,
)
from relabel.settings import AuditSettings
from tests.fake_label_studio import FakeLabelStudioClient

REPO_ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["sports", "cooking", "travel"]
WORDS = {
    "sports": "goal match team score league referee",
    "cooking": "recipe oven flour bake sauce spoon",
    "travel": "flight hotel beach passport luggage tour",
}
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">'
    + "".join(f'<Choice value="{name}"/>' for name in CLASSES)
    + "</Choices></View>"
)


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def seeded(n_tasks: int = 60, n_flipped: int = 6) -> tuple[FakeLabelStudioClient, int, list[int], set[int]]:
    """A fake server with one text project whose labels follow the vocabulary, ``n_flipped`` of them wrong;
    returns (client, project id, task ids, flipped task ids)."""
    client = FakeLabelStudioClient()
    project_id = int(client.create_project(title="unit project", label_config=CONFIG)["id"])
    rng = np.random.default_rng(0)
    tasks, flipped_rows = [], {i * 7 for i in range(n_flipped)}
    for i in range(n_tasks):
        truth = CLASSES[i % 3]
        label = CLASSES[(i + 1) % 3] if i in flipped_rows else truth
        text = " ".join(rng.choice(WORDS[truth].split(), size=4)) + f" item{i}"
        tasks.append({"data": {"text": text}, "annotations": [{"result": choice(label)}]})
    client.import_tasks(project_id, tasks)
    task_ids = sorted(t["id"] for t in client.export_tasks(project_id))
    return client, project_id, task_ids, {task_ids[i] for i in flipped_rows}


def relabel_predictions(client: FakeLabelStudioClient, project_id: int) -> list[dict]:
    return [p for p in client.list_predictions(project_id) if p["model_version"].startswith("relabel-")]


# ----------------------------------------------------------------------------------------------- selection
def test_one_ordering_rule_for_ties_and_nan() -> None:
    scores = [1.0, float("nan"), 3.0, 3.0, -2.0]
    assert suspicion_order(scores).tolist() == [2, 3, 0, 4, 1]  # ties in input order, NaN last
    assert suspicion_ranks(scores).tolist() == [3, 5, 1, 2, 4]
    assert normalised_suspicion(scores).tolist() == [0.5, 0.0, 0.75, 0.75, 0.25]
    assert number_to_flag(100) == 5 and number_to_flag(3, top_fraction=0.01) == 1
    with pytest.raises(InputError, match="not both"):
        number_to_flag(10, top=2, top_fraction=0.5)


def test_settings_are_validated_once_with_clear_errors() -> None:
    with pytest.raises(InputError, match="model must be one of logistic, mlp, cnn"):
        AuditSettings(model="svm")
    with pytest.raises(InputError, match="top must be a whole number"):
        AuditSettings(top=-5)
    with pytest.raises(InputError, match="unknown setting"):
        AuditSettings.from_mapping({"topp": 3})
    assert AuditSettings(method="loss").score_methods() == ("loss",)


def test_scorer_queried_before_fit_says_so() -> None:
    with pytest.raises(InputError, match="call fit"):
        SuspicionScorer().scores()


# ----------------------------------------------------------------------------------------------- pipeline
def test_audit_pushes_the_top_items_and_a_rerun_changes_nothing() -> None:
    client, project_id, _, flipped = seeded()
    connector = LabelStudioConnector(client=client)
    result = run_audit(connector, project_id, AuditSettings(top=6, queue="view"), progress=False)
    assert result.n_flagged == 6 and len(set(result.flagged_task_ids) & flipped) >= 5
    predictions = relabel_predictions(client, project_id)
    assert sorted(p["task"] for p in predictions) == sorted(result.flagged_task_ids)
    (view,) = client.list_views(project_id)
    assert view["data"]["title"] == VIEW_TITLE
    assert result.url == f"{client.url}/projects/{project_id}/data?tab={view['id']}"
    assert client.calls["get_project"] == 1  # the push reuses the project the pull read

    again = run_audit(connector, project_id, AuditSettings(top=6, queue="view"), progress=False)
    assert again.flagged_task_ids == result.flagged_task_ids
    assert again.push.predictions_created == 0 and again.push.predictions_kept == 6
    assert relabel_predictions(client, project_id) == predictions


def test_review_project_sync_and_undo_never_touch_human_annotations() -> None:
    client, project_id, task_ids, _ = seeded()
    before = {t["id"]: t["annotations"] for t in client.export_tasks(project_id)}
    connector = LabelStudioConnector(client=client)
    result = run_audit(connector, project_id, AuditSettings(top=4, queue="project"), progress=False)
    review = connector.review_project(project_id)
    assert review is not None and review["model_version"] == SUGGESTION_MODEL_VERSION
    review_tasks = client.export_tasks(int(review["id"]))
    assert [t["data"]["relabel_source_task"] for t in review_tasks] == result.flagged_task_ids
    first = review_tasks[0]
    client.add_annotation(first["id"], choice(first["data"]["relabel_suggested"]))
    with pytest.raises(RelabelError, match="not yet copied"):
        connector.undo(project_id)
    synced = connector.sync(project_id)
    assert synced.annotations_added == 1 and connector.sync(project_id).annotations_added == 0
    undone = connector.undo(project_id)
    assert undone.review_project_deleted == int(review["id"])
    after = {t["id"]: t["annotations"] for t in client.export_tasks(project_id)}
    assert all(after[task_id][: len(before[task_id])] == before[task_id] for task_id in task_ids)
    assert sum(len(after[t]) - len(before[t]) for t in task_ids) == 1  # only the synced decision was added


def test_stale_predictions_are_replaced_by_the_cheapest_plan() -> None:
    wanted = {1: {"task": 1, "model_version": "relabel-loss", "score": 1.0, "result": []}}
    existing = [
        {
            "id": 10,
            "task": 1,
            "model_version": "relabel-loss",
            "score": 1.0,
            "result": [],
            "mislabeling": 0.0,
        },
        *(
            {"id": 20 + i, "task": 2 + i, "model_version": "relabel-margin", "score": 0.5, "result": []}
            for i in range(50)
        ),
    ]
    plan = plan_predictions(existing, wanted, write_mislabeling=False, whole_versions={"relabel-margin"})
    assert plan.keep.keys() == {1} and plan.delete_versions == ["relabel-margin"] and plan.create == []
    # A version that also holds predictions relabel did not make is never deleted whole.
    plan = plan_predictions(existing, wanted, write_mislabeling=False)
    assert plan.delete_versions == [] and sorted(plan.delete_ids) == [20 + i for i in range(50)]


def test_audit_dry_run_and_nightly_dry_run_flag_the_same_tasks(tmp_path: Path) -> None:
    client, project_id, _, _ = seeded()
    connector = LabelStudioConnector(client=client)
    audit = run_audit(connector, project_id, AuditSettings(top=5), push=False, progress=False)
    config = tmp_path / "audit.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[defaults]\nurl = "{client.url}"\ntop = 5\n'
        f'report_dir = "{tmp_path / "reports"}/{{name}}"\n'
        f'[[projects]]\nname = "unit"\nproject = {project_id}\n'
    )
    stream = io.StringIO()
    code = run_nightly(config, force=True, push=False, stream=stream, connector_factory=lambda _: connector)
    assert code == EXIT_OK, stream.getvalue()
    table = (tmp_path / "reports" / "unit" / "ranking.csv").read_text().splitlines()
    header = table[0].split(",")
    flagged = [
        int(row.split(",")[0]) for row in table[1:] if row.split(",")[header.index("flagged")] == "True"
    ]
    assert flagged == audit.flagged_task_ids
    assert relabel_predictions(client, project_id) == []


# ----------------------------------------------------------------------------------------------- layout
def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("relabel", "connectors"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def test_connectors_depend_only_on_the_core_dataset_and_errors() -> None:
    for name, path in _modules().items():
        if name.startswith("connectors"):
            core = {module for module in _imports(path) if module.startswith("relabel")}
            assert core <= {"relabel.dataset", "relabel.errors"}, f"{name} imports {core}"


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()
    }
    cycles = [(a, b) for a, targets in graph.items() for b in targets if a in graph[b] and a < b]
    assert cycles == []


def test_only_the_label_studio_package_speaks_http() -> None:
    for name, path in _modules().items():
        if name.startswith("connectors.label_studio"):
            continue
        imported = _imports(path)
        assert not imported & {"requests", "httpx", "urllib.request", "label_studio_sdk"}, name
        assert "/api/" not in path.read_text(), name


# ----------------------------------------------------------------------------------------------- trust
def test_undo_leaves_look_alikes_it_did_not_create() -> None:
    client, project_id, task_ids, _ = seeded()
    connector = LabelStudioConnector(client=client)
    run_audit(connector, project_id, AuditSettings(top=4, queue="project"), progress=False)
    review = connector.review_project(project_id)
    # A person duplicates the review project (the copy keeps its description, marker included) and a team's
    # own model writes predictions under a relabel- version.
    copy = client.create_project(title="Team project", description=review["description"], label_config=CONFIG)
    client.import_tasks(
        int(copy["id"]), [{"data": {"text": "t"}, "annotations": [{"result": choice("travel")}]}]
    )
    client.import_predictions(
        project_id, [{"task": task_ids[0], "model_version": "relabel-classifier", "score": 0.9, "result": []}]
    )
    undone = connector.undo(project_id)
    assert undone.review_project_deleted == int(review["id"])
    assert int(copy["id"]) in client.projects and len(client.export_tasks(int(copy["id"]))) == 1
    assert [p["model_version"] for p in client.list_predictions(project_id)] == ["relabel-classifier"]
    assert any("Team project" in line for line in undone.left_alone)
    assert any("relabel-classifier" in line for line in undone.left_alone)
    # The duplicate is no review project of relabel's either: a new audit makes its own.
    again = run_audit(connector, project_id, AuditSettings(top=4, queue="project"), progress=False)
    assert again.push.review_project_created and again.push.review_project_id != int(copy["id"])


def test_a_second_writer_is_refused_while_the_lease_is_held() -> None:
    client, project_id, _, _ = seeded()
    connector, holder = LabelStudioConnector(client=client), LabelStudioConnector(client=client)
    connector.lease_wait_seconds = 0
    with holder.lease(project_id, "test holder"), pytest.raises(LockedError, match="test holder"):
        run_audit(connector, project_id, AuditSettings(top=3, queue="view"), progress=False)
    assert relabel_predictions(client, project_id) == []
    run_audit(
        connector, project_id, AuditSettings(top=3, queue="view"), progress=False
    )  # released: the next run writes
    assert len(relabel_predictions(client, project_id)) == 3


class CrashAfter(FakeLabelStudioClient):
    """A fake server whose client dies (like a SIGKILL) after ``budget`` write calls."""

    WRITES = (
        "create_project",
        "import_tasks",
        "import_predictions",
        "create_view",
        "update_view",
        "delete_prediction",
        "delete_model_version",
        "update_project",
        "update_task_data",
        "delete_tasks",
    )

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def __getattribute__(self, name: str):
        if name in CrashAfter.WRITES and object.__getattribute__(self, "budget") is not None:
            if object.__getattribute__(self, "budget") <= 0:
                raise KeyboardInterrupt("killed")
            object.__setattr__(self, "budget", object.__getattribute__(self, "budget") - 1)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("mode", ["view", "project"])
def test_runs_killed_mid_push_converge_to_one_queue_and_undo_removes_it(mode: str) -> None:
    client, project_id, _, _ = seeded()
    crashing = CrashAfter(budget=None)
    crashing.__dict__.update(client.__dict__)
    connector = LabelStudioConnector(client=crashing)
    ranked = run_audit(connector, project_id, AuditSettings(top=6), push=False, progress=False)
    items = flagged_items(ranked.ranking)
    crashes = 0
    for budget in range(1, 14):  # killed after 1, 2, ... writes: at every step of the push in turn
        crashing.budget = budget
        try:  # alternate between two queues, so that re-runs also have stale items to remove
            connector.push(project_id, items[: 5 + budget % 2], mode=mode)
        except KeyboardInterrupt:
            crashes += 1
        crashing.budget = None
        for lease in connector.ledger.entries(project_id, "lease"):  # a killed process leaves its lease
            connector.ledger.remove(lease)
    assert crashes >= 5
    result = run_audit(connector, project_id, AuditSettings(top=5, queue=mode), progress=False)
    assert len(relabel_predictions(crashing, project_id)) == (5 if mode == "view" else 0)
    assert len([v for v in crashing.views.values() if v["project"] == project_id]) == (
        1 if mode == "view" else 0
    )
    reviews = [p for p in crashing.projects.values() if p["title"].endswith("relabel review")]
    assert len(reviews) == (1 if mode == "project" else 0)
    if mode == "project":
        assert len(crashing.export_tasks(result.push.review_project_id)) == 5
    connector.undo(project_id, force=True)
    assert relabel_predictions(crashing, project_id) == []
    assert [p["title"] for p in crashing.projects.values()] == ["unit project", LEDGER_TITLE]
    assert [v for v in crashing.views.values() if v["project"] == project_id] == []


def test_nightly_restores_a_queue_that_was_undone(tmp_path: Path) -> None:
    client, project_id, _, _ = seeded()
    connector = LabelStudioConnector(client=client)
    config = tmp_path / "audit.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[defaults]\nurl = "{client.url}"\ntop = 5\nqueue = "view"\n'
        f'[[projects]]\nname = "unit"\nproject = {project_id}\n'
    )

    def nightly() -> str:
        stream = io.StringIO()
        assert run_nightly(config, stream=stream, connector_factory=lambda _: connector) == EXIT_OK
        return stream.getvalue()

    assert "status=ok" in nightly() and len(relabel_predictions(client, project_id)) == 5
    assert "status=unchanged" in nightly()
    connector.undo(project_id)
    assert "status=ok" in nightly() and len(relabel_predictions(client, project_id)) == 5


def test_accept_a_tier_in_bulk_then_undo_removes_exactly_those_annotations() -> None:
    client, project_id, _, _ = seeded()
    before = {t["id"]: t["annotations"] for t in client.export_tasks(project_id)}
    connector = LabelStudioConnector(client=client)
    result = run_audit(connector, project_id, AuditSettings(top=6), progress=False)
    review_id = result.push.review_project_id
    tiers = {t["data"]["relabel_tier"] for t in client.export_tasks(review_id)}
    tier = sorted(tiers)[0]
    pending = connector.pending_in_tier(project_id, tier)
    assert pending >= 1
    asked: list[int] = []
    declined = connector.accept(project_id, tier, lambda n: asked.append(n) or False)
    assert asked == [pending] and declined.accepted_task_ids == []
    accepted = connector.accept(project_id, tier, lambda n: True)
    assert len(accepted.accepted_task_ids) == pending
    assert connector.pending_in_tier(project_id, tier) == 0  # they left the queue
    for task in client.export_tasks(project_id):
        new = task["annotations"][len(before[task["id"]]) :]
        assert task["annotations"][: len(before[task["id"]])] == before[task["id"]]  # nothing edited
        if task["id"] in accepted.accepted_task_ids:
            (annotation,) = new
            assert annotation["result"][0]["id"].startswith("relabel-accept-")
        else:
            assert new == []
    undone = connector.undo(project_id)
    assert undone.accepted_annotations_deleted == pending
    assert {t["id"]: t["annotations"] for t in client.export_tasks(project_id)} == before


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_audit_says_why_the_queue_changes_size_and_marks_review_states(capsys) -> None:
    client, project_id, _, _ = seeded()
    connector = LabelStudioConnector(client=client)
    first = run_audit(connector, project_id, AuditSettings(top=6, queue="project"), progress=False)
    review_id = first.push.review_project_id
    top = first.flagged_task_ids[0]
    (task,) = [t for t in client.export_tasks(review_id) if t["data"]["relabel_source_task"] == top]
    client.add_annotation(task["id"], [], cancelled=True)  # the reviewer skips rank 1
    capsys.readouterr()

    second = run_audit(
        connector, project_id, AuditSettings(top_fraction=0.05, queue="project"), progress=False
    )

    assert capsys.readouterr().err == (
        f"relabel: the review queue of project {project_id} shrinks from 6 to 3 items: this run flags "
        "top_fraction=0.05 of 60 ranked items; the queue there was made with top=6 (of 60 ranked items)\n"
    )
    assert second.flagged_task_ids == first.flagged_task_ids[:3]
    states = second.ranking.set_index("task_id")["review_state"]
    assert states[top] == "skipped" and [states[t] for t in second.flagged_task_ids[1:]] == ["pending"] * 2
    assert set(states.drop(second.flagged_task_ids)) == {""}
    assert (second.push.skipped, second.push.pending, second.push.already_reviewed) == (1, 2, 0)
    assert [t["id"] for t in client.export_tasks(review_id) if t["data"]["relabel_source_task"] == top] == [
        task["id"]
    ]
