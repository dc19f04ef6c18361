"""End-to-end audit time on a large text project, broken down by stage: pull, featurize, fit, score, push.

A synthetic text project (default 20,000 tasks, 4 classes, one annotation each, 5 % of the labels flipped)
is created on a local Label Studio server, then one audit runs the same stages as ``relabel audit`` and the
nightly job (connector pull via the export API → TF-IDF featurizer → exact logistic fit → self-influence +
loss → push of the top 5 % as a view with predictions → HTML report), each timed on its own.

Usage::

    PYTHONPATH=. .venv/bin/python scripts/bench_audit.py                       # throw-away local server
    PYTHONPATH=. .venv/bin/python scripts/bench_audit.py --tasks 5000 --queue project
    PYTHONPATH=. .venv/bin/python scripts/bench_audit.py --url http://localhost:8080  # $LABEL_STUDIO_API_KEY

Prints a table ``stage | seconds | share`` and the planted errors found in the pushed queue.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from connectors.label_studio import LabelStudioConnector  # noqa: E402
from relabel.pipeline import run_audit  # noqa: E402
from relabel.settings import AuditSettings  # noqa: E402
from scripts.local_label_studio import LocalLabelStudio  # noqa: E402

CLASSES = ("sports", "cooking", "travel", "finance")
SHARED_WORDS = [f"word{i}" for i in range(200)]
CLASS_WORDS = {name: [f"{name}{i}" for i in range(60)] for name in CLASSES}
IMPORT_CHUNK = 5000


def synthetic_tasks(n_tasks: int, flip_rate: float, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Tasks with a class-typical vocabulary (4 class words + 8 shared words each); returns the tasks and
    the boolean mask of flipped labels."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(CLASSES), size=n_tasks)
    flipped = np.zeros(n_tasks, dtype=bool)
    flipped[rng.choice(n_tasks, size=round(flip_rate * n_tasks), replace=False)] = True
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, len(CLASSES), size=flipped.sum())) % len(CLASSES)
    tasks = []
    for k_true, k_given in zip(true, given, strict=True):
        words = list(rng.choice(CLASS_WORDS[CLASSES[k_true]], size=4)) + list(
            rng.choice(SHARED_WORDS, size=8)
        )
        rng.shuffle(words)
        result = [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [CLASSES[k_given]]},
            }
        ]
        tasks.append({"data": {"text": " ".join(words)}, "annotations": [{"result": result}]})
    return tasks, flipped


def seed_project(
    connector: LabelStudioConnector, tasks: list[dict[str, Any]]
) -> tuple[int, list[int], float]:
    """Create the project and import ``tasks`` in bulk chunks; returns (project id, task ids, seconds)."""
    config = (
        '<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">'
        + "".join(f'<Choice value="{name}"/>' for name in CLASSES)
        + "</Choices></View>"
    )
    started = time.perf_counter()
    project = connector.request_json(
        "POST", "/api/projects/", json={"title": f"bench audit {len(tasks)} tasks", "label_config": config}
    )
    task_ids: list[int] = []
    for start in range(0, len(tasks), IMPORT_CHUNK):
        answer = connector.request_json(
            "POST",
            f"/api/projects/{project['id']}/import",
            params={"return_task_ids": "true"},
            json=tasks[start : start + IMPORT_CHUNK],
            timeout=900,
        )
        task_ids += [int(task_id) for task_id in answer.get("task_ids", [])]
    return int(project["id"]), task_ids, time.perf_counter() - started


def run_audit_stages(
    connector: LabelStudioConnector, project_id: int, top_fraction: float, queue: str, report_dir: Path
) -> tuple[dict[str, float], list[int], dict[str, Any]]:
    """One audit through the pipeline; returns (seconds per stage, flagged task ids, facts)."""
    settings = AuditSettings(top_fraction=top_fraction, queue=queue)
    result = run_audit(connector, project_id, settings, report_dir=report_dir, progress=False)
    facts = {
        "n_labeled": result.n_labeled,
        "n_features": result.n_features,
        "n_parameters": result.scorer.fit_summary.n_parameters,
        "n_flagged": result.n_flagged,
        "push": result.push.summary(),
    }
    return result.seconds, result.flagged_task_ids, facts


def print_table(seconds: dict[str, float]) -> None:
    total = sum(seconds.values())
    print(f"{'stage':<10} | {'seconds':>8} | {'share':>6}")
    print(f"{'-' * 10}-+-{'-' * 8}-+-{'-' * 6}")
    for stage, value in seconds.items():
        print(f"{stage:<10} | {value:8.1f} | {value / total:6.1%}")
    print(f"{'total':<10} | {total:8.1f} | {1:6.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20000, help="tasks in the project (default 20,000)")
    parser.add_argument(
        "--flip-rate", type=float, default=0.05, help="share of labels flipped (default 0.05)"
    )
    parser.add_argument("--top-fraction", type=float, default=0.05, help="share flagged (default 0.05)")
    parser.add_argument("--queue", choices=("view", "project"), default="view")
    parser.add_argument(
        "--url", help="use this server instead of starting one (token: $LABEL_STUDIO_API_KEY)"
    )
    parser.add_argument("--data-dir", type=Path, help="data dir for the local server (default: a temp dir)")
    parser.add_argument("--report-dir", type=Path, help="where the report goes (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="relabel-bench-audit-") as scratch:
        server = None
        if args.url:
            connector = LabelStudioConnector(args.url, os.environ.get("LABEL_STUDIO_API_KEY"))
        else:
            print("starting a local Label Studio ...", flush=True)
            server = LocalLabelStudio(args.data_dir or Path(scratch) / "ls").start(timeout=300)
            connector = LabelStudioConnector(server.url, server.legacy_token)
        try:
            tasks, flipped = synthetic_tasks(args.tasks, args.flip_rate, args.seed)
            project_id, task_ids, import_seconds = seed_project(connector, tasks)
            print(f"seeded project {project_id}: {len(task_ids)} tasks in {import_seconds:.1f} s", flush=True)
            seconds, flagged_ids, facts = run_audit_stages(
                connector,
                project_id,
                args.top_fraction,
                args.queue,
                args.report_dir or Path(scratch) / "report",
            )
        finally:
            if server is not None:
                server.stop()
    flipped_ids = {
        task_id for task_id, is_flipped in zip(sorted(task_ids), flipped, strict=True) if is_flipped
    }
    found = len(flipped_ids & set(flagged_ids))
    print(
        f"\n{facts['n_labeled']} labeled tasks, {facts['n_features']} TF-IDF features, "
        f"{facts['n_parameters']} parameters; flagged {facts['n_flagged']} ({args.queue} queue)"
    )
    print_table(seconds)
    print(
        f"\nplanted errors in the queue: {found} of {len(flipped_ids)} "
        f"({found / max(1, len(flipped_ids)):.0%})"
    )
    print(facts["push"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
