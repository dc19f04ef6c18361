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


def test_default_queue_opens_in_the_browser_most_suspicious_first(
    label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    _, url = _audit(label_studio, monkeypatch, capsys)
    review_id = int(re.search(r"/projects/(\d+)/", url).group(1))
    tasks = sorted(export_tasks(label_studio, review_id), key=lambda task: task["id"])
    with Browser(width=1400, height=900) as browser:
        _open_logged_in(browser, label_studio, url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length === 6", timeout=60, what="six rows")
        rows = browser.evaluate(f"Array.from(document.querySelectorAll('{ROWS}')).map(r => r.innerText)")
        browser.screenshot(tmp_path / "queue.png", full_page=False)
        ranks = [int(re.search(r"relabel rank (\d+)", row).group(1)) for row in rows]
        assert ranks == [1, 2, 3, 4, 5, 6]  # most suspicious first
        first = tasks[0]
        assert first["data"]["text"].split()[0] in rows[0]  # the item itself is shown
        assert f"current label {first['data']['relabel_current']}" in rows[0]
        assert f"the model suggests {first['data']['relabel_suggested']}" in rows[0]

        browser.goto(f"{url}?task={first['id']}")
        browser.wait_for(
            "document.querySelector('.lsf-choices') !== null", timeout=120, what="the labeling form"
        )
        browser.wait_for("document.querySelectorAll('.lsf-choice input:checked').length === 1", timeout=60)
        checked = browser.evaluate(
            "document.querySelector('.lsf-choice input:checked').closest('.lsf-choice').innerText.trim()"
        )
        shown = browser.text(".lsf-main-view")
        browser.screenshot(tmp_path / "task.png", full_page=False)
        assert re.sub(r"\[\w+\]$", "", checked) == first["data"]["relabel_suggested"]  # (hotkey hint dropped)
        assert first["data"]["text"] in shown
        assert browser.errors_except(*HARMLESS) == []


def test_view_queue_loads_the_project_and_lists_only_the_flagged_tasks(
    label_studio: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    project_id, url = _audit(label_studio, monkeypatch, capsys, "--queue", "view")
    predictions = get_json(label_studio, "/api/predictions/", project=project_id)
    flagged = {int(p["task"]) for p in predictions if p["model_version"] == "relabel-self_influence"}
    with Browser(width=1400, height=900) as browser:
        _open_logged_in(browser, label_studio, url)
        browser.wait_for(f"document.querySelectorAll('{ROWS}').length === 6", timeout=60, what="six rows")
        ids = browser.evaluate(
            f"Array.from(document.querySelectorAll('{ROWS}')).map(r => r.innerText.trim().split(/\\s+/)[0])"
        )
        browser.screenshot(tmp_path / "view.png", full_page=False)
        assert {int(value) for value in ids} == flagged
        # The whole project still opens (a bad tab filter would blank every page of the project).
        browser.goto(f"{label_studio.url}/projects/{project_id}/data")
        browser.wait_for(
            f"document.querySelectorAll('{ROWS}').length > 0", timeout=120, what="the project's tasks"
        )
        assert browser.errors_except(*HARMLESS) == []
