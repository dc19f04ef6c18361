"""``relabel audit --model cnn`` on a real Label Studio project of uploaded images, timed stage by stage.

N (default 1,500) 28×28 grayscale digit images (``mnist_size_images`` from bench_deep_influence.py: sklearn
digits upscaled, shifted, noised) with 10 % of the labels flipped to another class are uploaded as PNG files
to an image classification project on a local Label Studio server, the way the UI's import dialog does
(multipart, 100 files a request: Label Studio's default ``DATA_UPLOAD_MAX_NUMBER_FILES``), and each task
gets one annotation with its (possibly flipped) label. Then the audit runs exactly as ``relabel audit
--project ID --model cnn --top-fraction 0.1`` would (the CLI's own parser builds the settings; queue: the
CLI's default; the report is written the way ``--report`` does), and once more with ``--model logistic
--dry-run`` for comparison (a dry run, so the CNN's review queue stays). Without ``--image-size`` the CNN
sees the images at 28×28 and the logistic model at 8×8 pixel features (the featurizer's defaults).

Usage::

    PYTHONPATH=. .venv/bin/python scripts/bench_cnn_audit.py                    # 1,500 images, local server
    PYTHONPATH=. .venv/bin/python scripts/bench_cnn_audit.py --items 200 --seed 1
    PYTHONPATH=. .venv/bin/python scripts/bench_cnn_audit.py --image-size 16    # both models at 16×16
    PYTHONPATH=. .venv/bin/python scripts/bench_cnn_audit.py --keep             # leave the server running
    PYTHONPATH=. .venv/bin/python scripts/bench_cnn_audit.py --url http://localhost:8080  # an existing server

``--url``: use that server (token: ``$LABEL_STUDIO_API_KEY``) instead of starting one. Prints the set-up
times, a table ``stage | cnn | logistic`` (seconds: pull, featurize, fit, score, triage, push, report,
total), the CNN audit's solver lines and summary, and the planted flips found among the flagged items (the
top 10 %) for the CNN and for the logistic model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from connectors.label_studio import LabelStudioConnector  # noqa: E402
from relabel.cli import build_parser  # noqa: E402
from relabel.commands.audit import settings_from_args, write_report  # noqa: E402
from relabel.commands.options import show_progress  # noqa: E402
from relabel.errors import RelabelError  # noqa: E402
from relabel.pipeline import AuditResult, run_audit  # noqa: E402
from scripts.bench_deep_influence import mnist_size_images  # noqa: E402
from scripts.local_label_studio import DEFAULT_EXECUTABLE, LocalLabelStudio  # noqa: E402

CLASSES = tuple(str(digit) for digit in range(10))
FLIP_RATE = 0.1
TOP_FRACTION = "0.1"
UPLOAD_CHUNK = 100  # Label Studio's DATA_UPLOAD_MAX_NUMBER_FILES (default 100): more files a request → 500
STAGES = ("pull", "featurize", "fit", "score", "triage", "push", "report")
FILE_NAME = "digit_{index:05d}.png"
FILE_INDEX = re.compile(r"digit_(\d{5})\.png$")


def planted_images(n_items: int, seed: int) -> tuple[list[bytes], list[str], np.ndarray]:
    """PNG bytes of ``n_items`` digit images, their given labels (10 % flipped to another class, seeded)
    and the boolean mask of the flipped ones."""
    from PIL import Image

    images, true = mnist_size_images(n_items, seed)
    rng = np.random.default_rng(seed)
    flipped = np.zeros(n_items, dtype=bool)
    flipped[rng.choice(n_items, size=round(FLIP_RATE * n_items), replace=False)] = True
    given = np.asarray(true).copy()
    given[flipped] = (given[flipped] + rng.integers(1, len(CLASSES), size=int(flipped.sum()))) % len(CLASSES)
    pngs = []
    for image in images:
        pixels = np.round(np.clip(image[0], 0.0, 1.0) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, [CLASSES[int(k)] for k in given], flipped


def create_project(connector: LabelStudioConnector, n_items: int) -> int:
    """An image classification project: ``<Image name="image">`` and single-choice "0".."9"; its id."""
    config = (
        '<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
        + "".join(f'<Choice value="{name}"/>' for name in CLASSES)
        + "</Choices></View>"
    )
    project = connector.request_json(
        "POST", "/api/projects/", json={"title": f"bench cnn audit {n_items} images", "label_config": config}
    )
    return int(project["id"])


def upload_pngs(connector: LabelStudioConnector, project_id: int, pngs: list[bytes]) -> list[int]:
    """Upload the PNGs as files (multipart, one form field per file, ``UPLOAD_CHUNK`` files a request), as
    the UI's import dialog does; returns the task id of each image, in image order (matched by file name:
    Label Studio stores an upload as ``/data/upload/<project>/<hash>-<name>``)."""
    for start in range(0, len(pngs), UPLOAD_CHUNK):
        files = [
            (f"file{index}", (FILE_NAME.format(index=index), pngs[index], "image/png"))
            for index in range(start, min(start + UPLOAD_CHUNK, len(pngs)))
        ]
        connector.request_json(
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            files=files,
            timeout=900,
        )
    task_ids: list[int | None] = [None] * len(pngs)
    for task in connector.client.list_tasks(project_id):
        match = FILE_INDEX.search(str(task["data"].get("image", "")))
        if match is not None:
            task_ids[int(match.group(1))] = int(task["id"])
    missing = [index for index, task_id in enumerate(task_ids) if task_id is None]
    if missing:
        raise SystemExit(
            f"{len(missing)} uploaded images have no task (first: {FILE_NAME.format(index=missing[0])})"
        )
    return [int(task_id) for task_id in task_ids if task_id is not None]


def annotate_all(connector: LabelStudioConnector, task_ids: list[int], labels: list[str]) -> None:
    """One annotation per task (``POST /api/tasks/<id>/annotations/``, as a person submitting it; Label
    Studio has no bulk call for annotations on existing tasks)."""
    for task_id, label in zip(task_ids, labels, strict=True):
        result = [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        ]
        connector.request_json("POST", f"/api/tasks/{task_id}/annotations/", json={"result": result})


def seed_project(
    connector: LabelStudioConnector, n_items: int, seed: int
) -> tuple[int, set[int], dict[str, float]]:
    """Create, upload and annotate the project; returns (project id, task ids of the planted flips, seconds
    per set-up step)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pngs, labels, flipped = planted_images(n_items, seed)
    seconds["make images"] = time.perf_counter() - started
    started = time.perf_counter()
    project_id = create_project(connector, n_items)
    task_ids = upload_pngs(connector, project_id, pngs)
    seconds["upload"] = time.perf_counter() - started
    print(f"uploaded {len(task_ids)} PNGs to project {project_id} in {seconds['upload']:.1f} s", flush=True)
    started = time.perf_counter()
    annotate_all(connector, task_ids, labels)
    seconds["annotate"] = time.perf_counter() - started
    print(f"annotated {len(task_ids)} tasks in {seconds['annotate']:.1f} s", flush=True)
    flipped_ids = {task_id for task_id, is_flipped in zip(task_ids, flipped, strict=True) if is_flipped}
    return project_id, flipped_ids, seconds


def cli_audit(
    connector: LabelStudioConnector, project_id: int, model: str, report_dir: Path, extra: list[str]
) -> AuditResult:
    """``relabel audit --project ID --model MODEL --top-fraction 0.1 --report DIR [EXTRA…]`` as the CLI
    runs it (its parser, ``settings_from_args``, ``run_audit``, then ``write_report``), on ``connector``."""
    argv = ["audit", "--project", str(project_id), "--model", model, "--top-fraction", TOP_FRACTION]
    argv += ["--report", str(report_dir), *extra]
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    result = run_audit(
        connector,
        args.project,
        settings,
        push=not args.dry_run,
        report_dir=None,
        progress=show_progress(args),
    )
    error = write_report(result, args.report)
    if error is not None:
        print(f"warning: the report was not written: {error}", file=sys.stderr)
    return result


def flips_found(result: AuditResult, flipped_ids: set[int]) -> str:
    found = len(flipped_ids & set(result.flagged_task_ids))
    return (
        f"{found} of {len(flipped_ids)} ({found / max(1, len(flipped_ids)):.0%}) "
        f"in {result.n_flagged} flagged"
    )


def print_table(runs: dict[str, AuditResult]) -> None:
    """``stage | seconds`` per audit; stages a run did not have (the dry run's push) show "—"."""
    names = list(runs)
    print(f"\n{'stage':<10} | " + " | ".join(f"{name:>9}" for name in names))
    print(f"{'-' * 10}-+-" + "-+-".join("-" * 9 for _ in names))
    extra = [stage for run in runs.values() for stage in run.seconds if stage not in STAGES]
    for stage in (*STAGES, *dict.fromkeys(extra)):
        cells = [runs[name].seconds.get(stage) for name in names]
        print(f"{stage:<10} | " + " | ".join("        —" if v is None else f"{v:9.1f}" for v in cells))
    print(f"{'total':<10} | " + " | ".join(f"{sum(runs[name].seconds.values()):9.1f}" for name in names))


def print_results(runs: dict[str, AuditResult], flipped_ids: set[int], setup: dict[str, float]) -> None:
    cnn = runs["cnn"]
    print("\nset-up (not part of the audit): " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()))
    print(
        f"cnn audit: {cnn.n_labeled} labeled images, {cnn.n_features} pixel features "
        f"({cnn.settings.queue} queue); logistic: dry run (nothing pushed)"
    )
    print_table(runs)
    print("\ncnn summary (AuditResult.summary(), with the fit and solver lines):")
    for line in cnn.summary().splitlines():
        print(f"  {line}")
    print(f"\nplanted flips found among the flagged items ({float(TOP_FRACTION):.0%} checked):")
    for name, result in runs.items():
        print(f"  {name:<9} {flips_found(result, flipped_ids)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1500, help="images in the project (default 1,500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the images and the flips (default 0)")
    parser.add_argument(
        "--url", help="use this server instead of starting one (token: $LABEL_STUDIO_API_KEY)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the local server running afterwards (its data dir, log and login are printed)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="pass --image-size PX to both audits (default: none: 28 px for the CNN, 8 px for logistic)",
    )
    parser.add_argument("--data-dir", type=Path, help="data dir for the local server (default: a temp dir)")
    parser.add_argument("--report-dir", type=Path, help="where the reports go (default: a temp dir)")
    parser.add_argument(
        "--label-studio",
        type=Path,
        default=DEFAULT_EXECUTABLE,
        help=f"the label-studio executable for the local server (default: {DEFAULT_EXECUTABLE})",
    )
    args = parser.parse_args(argv)
    if args.items < 10:
        parser.error("--items must be at least 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="relabel-bench-cnn-audit-"))
    report_dir = args.report_dir or scratch / "report"
    extra = [] if args.image_size is None else ["--image-size", str(args.image_size)]
    server = None
    try:
        if args.url:
            connector = LabelStudioConnector(args.url, os.environ.get("LABEL_STUDIO_API_KEY"))
        else:
            print("starting a local Label Studio ...", flush=True)
            server = LocalLabelStudio(args.data_dir or scratch / "ls", executable=args.label_studio)
            connector = LabelStudioConnector(server.start(timeout=300).url, server.legacy_token)
        project_id, flipped_ids, setup = seed_project(connector, args.items, args.seed)
        runs = {}
        for model in ("cnn", "logistic"):
            print(f"auditing project {project_id} with --model {model} ...", flush=True)
            options = extra if model == "cnn" else [*extra, "--dry-run"]
            runs[model] = cli_audit(connector, project_id, model, report_dir / model, options)
    except RelabelError as error:  # as the CLI: one line, exit 2 (e.g. a CNN fit that ran out of time)
        print(f"bench_cnn_audit: error: {error}", file=sys.stderr)
        return 2
    finally:
        if server is not None and not args.keep:
            server.stop()
            if args.data_dir is None:
                shutil.rmtree(server.data_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            scratch.rmdir()  # only when empty: nothing kept in it
    print_results(runs, flipped_ids, setup)
    print(f"\nreports: {report_dir}")
    if server is not None and args.keep:
        print(
            f"server left running: {server.url}/projects/{project_id} (pid {server.pid}, data dir "
            f"{server.data_dir}; the admin's login is in {server.state_path}); stop it with "
            f"kill -TERM -{server.pid}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
