"""Benchmark the Label Studio connector against a real local server.

Pull half (this file): for each size (default 1,000 / 10,000 / 20,000 text tasks, one annotation each,
imported in one bulk ``POST /api/projects/{id}/import``), time ``LabelStudioConnector.pull`` with
``method="export"`` and ``method="list"`` and print a table ``method, n_tasks, seconds``.

Push half (``--push``): :func:`bench_push` times pushing review queues of 100 / 1,000 / 2,000 items in view
and project mode, the re-runs and undo (``--push-only`` skips the pull half).

Usage::

    PYTHONPATH=. .venv/bin/python scripts/bench_connector.py                  # starts a throw-away server
    PYTHONPATH=. .venv/bin/python scripts/bench_connector.py --sizes 1000 5000 --repeats 3
    PYTHONPATH=. .venv/bin/python scripts/bench_connector.py --url http://localhost:8080 --api-key ...

With ``--url`` the projects are created on that server (and left there); otherwise a server is started in a
temporary data dir (``--data-dir`` to keep it) and stopped at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from connectors.label_studio import LabelStudioConnector  # noqa: E402
from scripts.local_label_studio import LocalLabelStudio  # noqa: E402

CLASSES = ("positive", "negative", "neutral")
WORDS = [
    "good",
    "bad",
    "fine",
    "great",
    "awful",
    "okay",
    "service",
    "food",
    "price",
    "staff",
    "slow",
    "quick",
    "clean",
    "dirty",
    "nice",
    "rude",
]
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">'
    + "".join(f'<Choice value="{name}"/>' for name in CLASSES)
    + "</Choices></View>"
)


def synthetic_text_tasks(n_tasks: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_tasks`` tasks ``{"data": {"text": ...}, "annotations": [one Choices annotation]}``."""
    rng = random.Random(seed)
    tasks = []
    for _ in range(n_tasks):
        text = " ".join(rng.choice(WORDS) for _ in range(12))
        label = rng.choice(CLASSES)
        result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
        tasks.append({"data": {"text": text}, "annotations": [{"result": result}]})
    return tasks


def seed_project(connector: LabelStudioConnector, n_tasks: int) -> tuple[int, float]:
    """Create a project holding ``n_tasks`` annotated text tasks; returns (project id, import seconds)."""
    project = connector.request_json(
        "POST", "/api/projects", json={"title": f"bench {n_tasks} tasks", "label_config": CONFIG}
    )
    project_id = int(project["id"])
    started = time.perf_counter()
    connector.request_json(
        "POST", f"/api/projects/{project_id}/import", json=synthetic_text_tasks(n_tasks), timeout=3600
    )
    return project_id, time.perf_counter() - started


def bench_pull(
    connector: LabelStudioConnector, sizes: Sequence[int], repeats: int = 1
) -> list[tuple[str, int, float]]:
    """Rows ``(method, n_tasks, seconds)``: the best of ``repeats`` pulls of each project by each method."""
    rows = []
    for n_tasks in sizes:
        project_id, import_seconds = seed_project(connector, n_tasks)
        print(f"seeded project {project_id}: {n_tasks} tasks imported in {import_seconds:.1f} s", flush=True)
        for method in ("export", "list"):
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                dataset = connector.pull(project_id, method=method)
                timings.append(time.perf_counter() - started)
                if len(dataset) != n_tasks:
                    raise RuntimeError(f"pull by {method} returned {len(dataset)} items, expected {n_tasks}")
            rows.append((method, n_tasks, min(timings)))
            print(f"  {method:6s} {n_tasks:6d} tasks: {min(timings):.2f} s", flush=True)
    return rows


PUSH_SIZES = (100, 1000, 2000)
MISLABELING_SIZES = (100,)


def bench_push(
    connector: LabelStudioConnector,
    sizes: Sequence[int] = PUSH_SIZES,
    mislabeling_sizes: Sequence[int] = MISLABELING_SIZES,
) -> list[tuple[str, int, float]]:
    """Rows ``(step, n_items, seconds)`` for pushing review queues of each size (push half of the benchmark).

    One project of ``max(sizes)`` annotated text tasks is seeded; for each size N the first N tasks are
    flagged (random scores, seed 0) and these steps are timed, each starting from a clean project:

    * ``view``: first push in view mode (bulk prediction import + the Data Manager view), no ``mislabeling``;
    * ``view-rerun``: the same push again (finds everything in place, changes nothing);
    * ``undo``: removing the predictions and the view;
    * ``view+mis``: first push in view mode writing ``mislabeling`` too (one PATCH per prediction; only for
      the sizes in ``mislabeling_sizes``, it is slow);
    * ``project`` / ``project-rerun``: first push and re-push in project mode (a review project with N task
      copies); ``project-shift``: a re-push after the top item left, so every other task's rank moves and
      is updated in place (one request per task); then undo (deletes the review project).
    """
    from connectors.label_studio.push import ReviewQueue
    from relabel.dataset import FlaggedItem

    rows: list[tuple[str, int, float]] = []
    project_id, import_seconds = seed_project(connector, max(sizes))
    print(f"seeded project {project_id}: {max(sizes)} tasks imported in {import_seconds:.1f} s", flush=True)
    tasks = connector.request_json(
        "GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON"}, timeout=600
    )
    task_ids = sorted(int(task["id"]) for task in tasks)
    # The current label of each task, as run_audit hands it to the queue (it knows it from the pull).
    current_label = {
        int(task["id"]): task["annotations"][0]["result"][0]["value"]["choices"][0] for task in tasks
    }
    rng = random.Random(0)
    plain = ReviewQueue(connector.client, write_mislabeling=False)
    with_mislabeling = ReviewQueue(connector.client, write_mislabeling=True)

    def timed(step: str, n_items: int, action: Any) -> None:
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
        rows.append((step, n_items, seconds))
        print(f"  {step:14s} {n_items:6d} items: {seconds:.2f} s", flush=True)

    for n_items in sizes:
        chosen = task_ids[:n_items]
        scores = [rng.random() for _ in chosen]
        suggested = [rng.choice(CLASSES) for _ in chosen]
        current = [current_label[task_id] for task_id in chosen]
        order = sorted(range(n_items), key=lambda i: -scores[i])
        items = [
            FlaggedItem(chosen[i], rank, scores[i], suggested[i], current[i])
            for rank, i in enumerate(order, start=1)
        ]
        connector.undo(project_id, force=True)
        timed("view", n_items, lambda items=items: plain.push(project_id, items))
        timed("view-rerun", n_items, lambda items=items: plain.push(project_id, items))
        timed("undo", n_items, lambda: connector.undo(project_id, force=True))
        if n_items in mislabeling_sizes:
            timed("view+mis", n_items, lambda items=items: with_mislabeling.push(project_id, items))
            connector.undo(project_id, force=True)
        timed("project", n_items, lambda items=items: plain.push(project_id, items, mode="project"))
        timed("project-rerun", n_items, lambda items=items: plain.push(project_id, items, mode="project"))
        # The top item leaves (accepted); every other rank moves up one: each task is updated in place.
        shifted = [replace(item, rank=item.rank - 1) for item in items[1:]]
        timed("project-shift", n_items - 1, lambda s=shifted: plain.push(project_id, s, mode="project"))
        connector.undo(project_id, force=True)
    return rows


def format_table(rows: Sequence[tuple[str, int, float]]) -> str:
    """Rows as a fixed-width text table with a header."""
    lines = [f"{'method':<14} {'n_tasks':>8} {'seconds':>9}"]
    lines += [f"{method:<14} {n_tasks:>8d} {seconds:>9.2f}" for method, n_tasks, seconds in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 20000])
    parser.add_argument(
        "--repeats", type=int, default=1, help="pulls per (size, method); the best is reported"
    )
    parser.add_argument("--url", help="use this Label Studio server instead of starting one")
    parser.add_argument("--api-key", help="API key for --url (default: LABEL_STUDIO_API_KEY)")
    parser.add_argument("--data-dir", type=Path, help="data dir for the started server (default: a temp dir)")
    parser.add_argument("--push", action="store_true", help="also time pushing review queues (bench_push)")
    parser.add_argument("--push-only", action="store_true", help="time pushing only, not pulling")
    parser.add_argument("--push-sizes", type=int, nargs="+", default=list(PUSH_SIZES))
    parser.add_argument(
        "--mislabeling-sizes",
        type=int,
        nargs="*",
        default=list(MISLABELING_SIZES),
        help="push sizes also timed with the per-prediction mislabeling field (slow: one request each)",
    )
    args = parser.parse_args(argv)

    server: LocalLabelStudio | None = None
    if args.url:
        connector = LabelStudioConnector(args.url, args.api_key)
    else:
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="relabel-bench-"))
        print(f"starting Label Studio in {data_dir} ...", flush=True)
        server = LocalLabelStudio(data_dir).start()
        connector = LabelStudioConnector(server.url, server.legacy_token)
    try:
        rows = [] if args.push_only else bench_pull(connector, args.sizes, args.repeats)
        if args.push or args.push_only:
            rows += bench_push(connector, args.push_sizes, args.mislabeling_sizes)
    except requests.RequestException as error:
        print(f"benchmark failed: {type(error).__name__}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
