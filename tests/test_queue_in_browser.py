"""The review queue as a reviewer sees it: ``relabel audit`` against the real Label Studio, then the printed
URL opened, logged in, in headless Chromium (``tests/browser.py``), reading the rendered Data Manager."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from relabel.cli import main
from tests.browser import Browser
from tests.label_studio_seeding import export_tasks, get_json
from tests.test_audit_cli import _sentiment_project

HARMLESS = ("heidi-tips",)  # Label Studio's own pages ask for this and get a 404
ROWS = ".lsf-table__row-wrapper"


def _audit(label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, *extra: str) -> tuple[int, str]:
    project_id, _ = _sentiment_project(label_studio, n_tasks=40, seed=21)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.legacy_token)
    code = main(
        ["audit", "--url", label_studio.url, "--project", str(project_id), "--top", "6", "--quiet", *extra]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (url,) = re.findall(r"^open: (\S+)$", out, flags=re.M)
    return project_id, url


def _open_logged_in(browser: Browser, label_studio: Any, url: str) -> None:
    browser.login(
        f"{label_studio.url}/user/login/", label_studio.username, label_studio.password, timeout=120
    )
    browser.goto(url)
    browser.wait_for(f"document.querySelectorAll('{ROWS}').length > 0", timeout=120, what="the task table")


# Column titles (the first line: Label Studio adds a type badge under data columns), one per column.
HEADERS = "[...document.querySelectorAll('.lsf-th')].map(e => e.innerText.trim().split('\\n')[0])"
CELLS = (
    f"Array.from(document.querySelectorAll('{ROWS}')).map(r => Array.from(r.querySelectorAll("
    "'.lsf-table__cell')).map(c => c.innerText.trim()))"
)
# A JavaScript function: the element's box, and whether it lies wholly inside the window.
IN_WINDOW = (
    "(e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left, "
    "right: r.right, inside: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth "
    "&& r.height > 0}; })"
)


def test_default_queue_opens_in_the_browser_most_suspicious_first(
    label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    project_id, url = _audit(label_studio, monkeypatch, capsys)
    review_id = int(re.search(r"/projects/(\d+)/", url).group(1))
    tasks = sorted(export_tasks(label_studio, review_id), key=lambda task: task["id"])
    with Browser(width=1366, height=768) as browser:
        _open_logged_in(browser, label_studio, url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length === 6", timeout=60, what="six rows")
        headers = browser.evaluate(HEADERS)
        browser.screenshot(tmp_path / "queue.png", full_page=False)
        # Readable column titles, inside the window; relabel's machine fields are not shown.
        for title in ("relabel rank", "relabel tier", "current label", "suggested label"):
            assert title in headers, headers
            assert browser.evaluate(
                f"{IN_WINDOW}([...document.querySelectorAll('.lsf-th')].find(e => "
                f"e.innerText.trim().split('\\n')[0] === '{title}'))"
            )["inside"], title
        assert not [title for title in headers if title.startswith("relabel_")], headers
        column = headers.index("relabel rank")
        cells = browser.evaluate(CELLS)
        first = tasks[0]
        rank_cells = [row[column] for row in cells]
        assert rank_cells == ["1", "2", "3", "4", "5", "6"]  # most suspicious first
        assert first["data"]["text"].split()[0] in " ".join(cells[0])  # the item itself is shown
        assert first["data"]["relabel_current"] in cells[0] and first["data"]["relabel_suggested"] in cells[0]

        browser.goto(f"{url}?task={first['id']}")
        browser.wait_for(
            "document.querySelector('.lsf-choices') !== null", timeout=120, what="the labeling form"
        )
        browser.wait_for("document.querySelectorAll('.lsf-choice input:checked').length === 1", timeout=60)
        browser.wait_for_selector(".relabel-reasons", visible=True, timeout=60)
        checked = browser.evaluate(
            "document.querySelector('.lsf-choice input:checked').closest('.lsf-choice').innerText.trim()"
        )
        shown = browser.text(".lsf-main-view")
        browser.screenshot(tmp_path / "task.png", full_page=False)
        assert re.sub(r"\[\w+\]$", "", checked) == first["data"]["relabel_suggested"]  # (hotkey hint dropped)
        assert first["data"]["text"] in shown
        # The reasons, without scrolling at 1366×768: verdict, supporters and opposers with their labels and
        # links to their tasks in the source project; the Choices in the window too.
        block = browser.evaluate(f"{IN_WINDOW}(document.querySelector('.relabel-reasons'))")
        assert block["inside"], block
        assert browser.evaluate(f"{IN_WINDOW}(document.querySelector('.lsf-choices'))")["inside"]
        reasons = browser.text(".relabel-reasons")
        assert "#1 · " in reasons and f"current label {first['data']['relabel_current']}" in reasons
        assert "Supports" in reasons and "Opposes" in reasons
        links = browser.evaluate("[...document.querySelectorAll('.relabel-reasons a')].map(a => a.href)")
        assert len(links) >= 2
        for link in links:
            source_task = int(
                re.fullmatch(rf"{label_studio.url}/projects/{project_id}/data\?task=(\d+)", link)[1]
            )
            assert int(get_json(label_studio, f"/api/tasks/{source_task}")["project"]) == project_id
        # The instructions: what the queue is and what Submit and Skip do.
        browser.evaluate(
            "[...document.querySelectorAll('button')]"
            ".find(b => b.innerText.trim() === 'Instructions').click()"
        )
        browser.wait_for_text("relabel review queue", timeout=30)
        instructions = browser.text("body")
        browser.screenshot(tmp_path / "instructions.png", full_page=False)
        assert (
            "Submit records the label selected" in instructions and "Skip records no decision" in instructions
        )
        assert browser.errors_except(*HARMLESS) == []


def test_view_queue_lists_only_the_flagged_tasks_most_suspicious_first(
    label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    project_id, url = _audit(label_studio, monkeypatch, capsys, "--queue", "view")
    predictions = get_json(label_studio, "/api/predictions/", project=project_id)
    ours = [p for p in predictions if p["model_version"] == "relabel-self_influence"]
    by_suspicion = [int(p["task"]) for p in sorted(ours, key=lambda p: -p["score"])]
    with Browser(width=1366, height=768) as browser:
        _open_logged_in(browser, label_studio, url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length === 6", timeout=60, what="six rows")
        headers = browser.evaluate(HEADERS)
        cells = browser.evaluate(CELLS)
        browser.screenshot(tmp_path / "view.png", full_page=False)
        ids = [int(row[headers.index("ID")]) for row in cells]
        scores = [float(row[headers.index("Prediction score")]) for row in cells]
        assert ids == by_suspicion  # the tab is sorted by suspicion, most suspicious first
        assert scores == sorted(scores, reverse=True) and scores[0] == 1.0  # the score column is filled
        assert "text" in headers and not any(
            "from_name" in cell for row in cells for cell in row
        )  # no raw JSON
        # The whole project still opens (a bad tab filter would blank every page of the project).
        browser.goto(f"{label_studio.url}/projects/{project_id}/data")
        browser.wait_for(
            f"document.querySelectorAll('{ROWS}').length > 0", timeout=120, what="the project's tasks"
        )
        assert browser.errors_except(*HARMLESS) == []
