"""The browser harness (tests/browser.py) itself, and against the real test Label Studio: logging in through
its form, reading the projects page, and following the audit report's links to the tasks they name."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.label_studio import LabelStudioConnector
from relabel.pipeline import run_audit
from relabel.settings import AuditSettings
from tests.browser import Browser, BrowserError
from tests.label_studio_seeding import create_project, get_json, text_classification_config

# Label Studio's own pages log a few harmless errors in a fresh, offline server (e.g. its disabled
# analytics/version check); the report page must log none (tests/test_report.py).
LABEL_STUDIO_NOISE = ("favicon", "sentry", "analytics", "feature-flags", "version")


def test_harness_waits_evaluates_and_records_page_errors(tmp_path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<!DOCTYPE html><html><body><form id=f action='#done'><input name=email><input type=password name=p>"
        "<button>go</button></form><div id=late></div><script>"
        "setTimeout(() => { document.getElementById('late').textContent = 'ready'; }, 300);"
        "console.error('something broke'); setTimeout(() => { throw new Error('uncaught'); }, 50);"
        "</script></body></html>"
    )
    with Browser(width=800, height=600) as browser:
        browser.goto(page.as_uri())
        assert (
            browser.wait_for("document.getElementById('late').textContent === 'ready' && 42", timeout=10)
            == 42
        )
        browser.fill("input[name=email]", "me@example.org")
        assert browser.evaluate("document.querySelector('input[name=email]').value") == "me@example.org"
        with pytest.raises(BrowserError, match="timed out after 1 s waiting for 'never'"):
            browser.wait_for("false", timeout=1, what="never")
        with pytest.raises(BrowserError, match="JavaScript error"):
            browser.evaluate("null.property")
        browser.drain(0.3)
        kinds = {(error.kind, error.text.split("\n")[0]) for error in browser.errors}
        assert ("console", "something broke") in kinds and ("exception", "Error: uncaught") in kinds
        shot = browser.screenshot(tmp_path / "page.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BrowserError, match="the browser is closed"):
        browser.evaluate("1")


def test_harness_fails_loudly_when_chromium_cannot_start(tmp_path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'no display, no luck' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrowserError, match="chromium exited at start-up \\(exit 3\\): no display, no luck"):
        Browser(executable=str(fake))


def test_login_to_label_studio_and_read_the_projects_page(label_studio, tmp_path) -> None:
    title = "browser harness project ✓"
    project_id = create_project(label_studio, text_classification_config(["yes", "no"]), title=title)
    with Browser() as browser:
        browser.login(
            f"{label_studio.url}/user/login/", label_studio.username, label_studio.password, timeout=90
        )
        assert "sessionid" in {cookie["name"] for cookie in browser.cookies()}
        browser.goto(f"{label_studio.url}/projects/", timeout=90)
        browser.wait_for_text(title, timeout=90)
        links = browser.evaluate(
            "[...document.querySelectorAll('a')].map(a => a.getAttribute('href')).filter(h => h)"
        )
        assert any(re.search(rf"/projects/{project_id}(/|$)", href) for href in links), links
        browser.screenshot(tmp_path / "label-studio-projects.png")
        unexpected = browser.errors_except(*LABEL_STUDIO_NOISE)
        print("Label Studio page errors:", [str(error) for error in unexpected])


def test_report_links_open_existing_tasks_in_label_studio(label_studio, tmp_path) -> None:
    from tests.test_nightly import seed_project

    project_id, task_ids = seed_project(label_studio, "report links", n_tasks=45, n_flipped=4)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    result = run_audit(
        connector,
        project_id,
        AuditSettings(top=5),
        push=False,
        report_dir=tmp_path / "report",
        progress=False,
    )
    report = Path(result.report_path).resolve()
    with Browser() as browser:
        browser.goto(report.as_uri())
        browser.wait_for_selector("#flagged tbody tr", visible=True)
        browser.screenshot(tmp_path / "report.png")
        links = browser.evaluate("[...document.querySelectorAll('#flagged a')].map(a => a.href)")
        browser.drain(0.2)
        assert not browser.errors, [str(error) for error in browser.errors]
        linked = set()
        for link in links:
            parts = urlsplit(link)
            assert f"{parts.scheme}://{parts.netloc}" == label_studio.url
            assert parts.path == f"/projects/{project_id}/data"
            linked.add(int(parse_qs(parts.query)["task"][0]))
        assert set(result.flagged_task_ids) <= linked <= set(task_ids)
        for task_id in linked:  # every linked task exists, in this project
            assert int(get_json(label_studio, f"/api/tasks/{task_id}")["project"]) == project_id
        # and a link opens that task for a logged-in reviewer
        first = result.flagged_task_ids[0]
        text = get_json(label_studio, f"/api/tasks/{first}")["data"]["text"]
        browser.login(
            f"{label_studio.url}/user/login/", label_studio.username, label_studio.password, timeout=90
        )
        browser.goto(f"{label_studio.url}/projects/{project_id}/data?task={first}", timeout=90)
        browser.wait_for_text(text, timeout=120)
        assert f"task={first}" in browser.url
        browser.screenshot(tmp_path / "label-studio-task.png")
