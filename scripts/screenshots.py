"""Make the README's screenshots from a real run: docs/queue.png, docs/task.png, docs/instructions.png,
docs/view.png and docs/report.png.

Starts a fresh local Label Studio in a temporary folder, seeds the demo's digits project (1,797 images, 10 %
of the labels flipped on purpose), runs ``relabel audit`` with its defaults (a review project) and a report,
then opens the queue, the first task (with its reason block) and the project's instructions in headless
Chromium (the test suite's DevTools harness, ``tests/browser.py``) at 1366×768, logged in as a reviewer
would be, and saves what the page shows; then audits again with ``--queue view`` and saves that tab, and
the report.

Usage::

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from connectors.label_studio import LabelStudioConnector  # noqa: E402
from relabel.pipeline import AuditResult, run_audit  # noqa: E402
from relabel.settings import AuditSettings  # noqa: E402
from scripts import demo  # noqa: E402
from scripts.local_label_studio import LocalLabelStudio, ensure_label_studio_installed, find_free_port  # noqa: E402
from tests.browser import Browser  # noqa: E402

ROWS = ".lsf-table__row-wrapper"


def shoot(
    server: LocalLabelStudio, connector: LabelStudioConnector, result: AuditResult, view_url: str, out: Path
) -> None:
    """Open the queue, its first task, the instructions, the view tab and the report as a logged-in
    reviewer and save what they show."""
    checked = "document.querySelectorAll('.lsf-choice input:checked').length === 1"
    with Browser(width=1366, height=768, timeout=120) as browser:
        browser.login(f"{server.url}/user/login/", server.username, server.password, timeout=120)
        browser.goto(result.url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length > 5", timeout=120, what="the queue")
        time.sleep(2)  # thumbnails
        browser.screenshot(out / "queue.png", full_page=False)
        tasks = connector.client.export_tasks(result.push.review_project_id)
        browser.goto(f"{result.url}?task={min(task['id'] for task in tasks)}")
        browser.wait_for(checked, timeout=120, what="the pre-filled suggestion")
        time.sleep(2)
        browser.screenshot(out / "task.png", full_page=False)
        browser.evaluate(
            "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Instructions')"
            ".click()"
        )
        browser.wait_for_text("relabel review queue", timeout=60)
        time.sleep(1)
        browser.screenshot(out / "instructions.png", full_page=False)
        browser.goto(view_url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length > 5", timeout=120, what="the view tab")
        time.sleep(2)
        browser.screenshot(out / "view.png", full_page=False)
        browser.goto(result.report_path.resolve().as_uri())
        browser.wait_for("document.querySelectorAll('tr').length > 5", timeout=60, what="the report table")
        browser.screenshot(out / "report.png", full_page=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="folder for the PNG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_label_studio_installed(REPO_ROOT / ".ls-venv")
    with tempfile.TemporaryDirectory(prefix="relabel-screens-") as folder:
        demo.PLANTED_FILE = Path(folder) / "planted.json"
        server = LocalLabelStudio(Path(folder) / "ls", port=find_free_port(), username=demo.USERNAME)
        with server.start(timeout=300):
            connector = LabelStudioConnector(server.url, server.legacy_token)
            project_id = int(demo.seed_project(connector)["project_id"])
            settings = AuditSettings(top_fraction=0.10, image_size=8, features="pixels")
            report = Path(folder) / "report"
            result = run_audit(connector, project_id, settings, report_dir=report, progress=False)
            print(result.summary())
            view = run_audit(connector, project_id, replace(settings, queue="view"), progress=False)
            print(view.summary())
            shoot(server, connector, result, str(view.url), args.out)
    for name in ("queue", "task", "instructions", "view", "report"):
        print(f"wrote {args.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
