"""Audit reports: the files exist, the HTML is self-contained, and in headless Chromium (tests/browser.py) it
renders without errors, shows the plot, links every item to its task, and its filters change the rows."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from relabel.comparison import METHOD_COLOURS
from relabel.dataset import LabeledDataset
from relabel.models.choice import CandidateScore, ModelChoice
from relabel.noise import inject_label_noise
from relabel.report import write_audit_report
from relabel.scorer import SuspicionScorer
from relabel.selection import ranking_table
from relabel.triage import TIERS
from tests.browser import Browser

LS_URL = "http://label-studio.example:8080"


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels / 16 * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A report of a 400-digit image "project" with 10 % flipped labels."""
    digits = load_digits()
    n_items = 400
    images, y = digits.images[:n_items], digits.target[:n_items]
    noisy = inject_label_noise(y, 0.1, seed=0)
    classes = [str(k) for k in range(10)]
    ids = np.arange(1000, 1000 + n_items)
    dataset = LabeledDataset(
        ids=ids,
        inputs=[png_bytes(image) for image in images],
        kind="image",
        labels=np.array([classes[k] for k in noisy.labels], dtype=object),
        classes=classes,
        provenance=pd.DataFrame(index=pd.Index(ids, name="id")),
        source={
            "type": "label_studio",
            "url": LS_URL + "/",
            "project_id": 7,
            "project_title": "digits <test> & co",
        },
    )
    X = images.reshape(n_items, -1) / 16.0
    scorer = SuspicionScorer(l2=1e-2).fit(X, list(dataset.labels), classes=classes)
    scores = scorer.scores(("self_influence", "loss", "margin"))
    table = ranking_table(dataset, scores, "self_influence", n_flagged=20)
    report_dir = tmp_path_factory.mktemp("report")
    choice = ModelChoice(
        "logistic",
        "pixels",
        "lowest out-of-fold log-loss (0.512 nats)",
        3,
        300.0,
        12.0,
        [
            CandidateScore("logistic", "pixels", 0.512, 0.88, 2.0),
            CandidateScore("cnn", "pixels", skipped="time budget spent"),
        ],
    )
    paths = write_audit_report(
        report_dir,
        dataset,
        scorer,
        table,
        method="self_influence",
        n_flagged=20,
        summary={"project": 7},
        model_choice=choice,
    )
    return {"paths": paths, "table": table, "dataset": dataset, "noisy": noisy, "choice": choice}


def test_report_files_exist_and_agree(audit_report) -> None:
    paths = audit_report["paths"]
    for key in ("ranking_csv", "ranking_parquet", "report_html"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    from_csv = pd.read_csv(paths["ranking_csv"])
    from_parquet = pd.read_parquet(paths["ranking_parquet"])
    assert len(from_csv) == len(from_parquet) == 400
    assert from_csv["task_id"].tolist() == from_parquet["task_id"].tolist()
    assert from_csv["rank"].tolist() == list(range(1, 401))
    for column in ("self_influence", "loss", "margin", "current_label", "suggested_label"):
        assert column in from_parquet.columns


def test_report_html_is_self_contained_and_lists_the_flagged_items(audit_report) -> None:
    page = Path(audit_report["paths"]["report_html"]).read_text()
    # no external assets: every src is a data URI, no stylesheet link, one inline script (the filters and
    # the stale check) and one inline JSON block (the last sync, filled in by `relabel sync --report`)
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<link" not in page and page.count("<script") == 2 and page.count("<script>") == 1
    assert '<script id="relabel-sync" type="application/json">null</script>' in page
    # the only URLs are links (href) to this project's tasks in Label Studio; the other links jump on the page
    urls = re.findall(r"https?://[^\s\"'<>]+", page)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert urls and set(urls) == {href for href in hrefs if not href.startswith("#")}
    assert {href for href in hrefs if href.startswith("#")} == {
        "#top",
        "#flagged-items",
        "#by-class",
        "#scores",
    }
    assert all(url.startswith(f"{LS_URL}/projects/7/data?task=") for url in urls)
    assert "digits &lt;test&gt; &amp; co" in page  # titles are escaped
    table = audit_report["table"]
    listed = [int(value) for value in re.findall(r'<tr data-item="(\d+)"', page)]
    assert listed == table["task_id"].head(20).tolist()
    for task_id in listed:
        assert (
            f'<a href="{LS_URL}/projects/7/data?task={task_id}" target="_blank" rel="noopener">{task_id}</a>'
            in page
        )
    assert page.count('class="thumb"') == 20  # one thumbnail per flagged item
    assert page.count('class="minithumb"') >= 20  # and small ones for their supporters/opposers
    assert page.count("supports its label") + page.count("opposes it") >= 20  # explanations per item
    assert "By class" in page and 'id="confusions"' in page and "estimated errors" in page


def test_report_folder_holds_the_triage_and_the_explain_archive(audit_report) -> None:
    paths = audit_report["paths"]
    ranking = pd.read_parquet(paths["ranking_parquet"])
    for column in ("tier", "supported_only_by_flagged", "top_two_gap", "estimated_error"):
        assert column in ranking.columns
    flagged = ranking[ranking["flagged"]]
    assert set(flagged["tier"]) <= set(TIERS) and (ranking.loc[~ranking["flagged"], "tier"] == "").all()
    errors = set(audit_report["dataset"].ids[audit_report["noisy"].flipped].tolist())
    likely = flagged[flagged["tier"] == "likely error"]
    assert len(likely) >= 1 and likely["task_id"].isin(errors).all()  # 20 flagged of 400, 40 flips
    archive = pd.read_parquet(paths["explain"])
    assert set(archive["item"]) == set(flagged["task_id"])
    assert list(archive.columns) == ["item", "role", "position", "id", "influence", "label", "flagged"]
    assert archive.groupby(["item", "role"]).size().max() <= 10
    assert (archive.loc[archive["role"] == "supports", "influence"] > 0).all()
    assert (archive["flagged"] == archive["id"].isin(set(flagged["task_id"]))).all()
    facts = json.loads(paths["audit_json"].read_text())
    assert facts["task_url"] == f"{LS_URL}/projects/7/data?task={{task_id}}"
    assert facts["n_flagged"] == 20 and facts["classes"] == [str(k) for k in range(10)]
    assert sum(facts["triage"]["tiers"].values()) == 20
    assert facts["triage"]["estimated_label_errors"]["total"] > 0
    # small: a few kB for 20 flagged items
    assert paths["explain"].stat().st_size < 50_000


def test_report_in_headless_chromium_renders_links_and_filters(audit_report, tmp_path) -> None:
    html_path = Path(audit_report["paths"]["report_html"]).resolve()
    ranking = pd.read_parquet(audit_report["paths"]["ranking_parquet"])
    flagged = ranking[ranking["flagged"]]
    with Browser(width=1400, height=1000) as browser:
        browser.goto(html_path.as_uri())
        browser.wait_for_selector("#flagged tbody tr", visible=True)
        browser.screenshot(tmp_path / "report.png")
        cards = browser.evaluate("[...document.querySelectorAll('.card')].map(c => c.innerText)")
        assert any("logistic on pixels" in card and "model (chosen by auto)" in card for card in cards)
        assert browser.text(".model-choice") == audit_report["choice"].describe()
        assert "cnn on pixels: not measured (time budget spent)" in browser.text(".model-choice")
        assert browser.count("#flagged tbody tr", visible=True) == 20
        assert browser.text("#filter-count") == "20 of 20 items shown"
        # every item link (and every supporter's) opens this project's task in Label Studio
        links = browser.evaluate("[...document.querySelectorAll('#flagged a')].map(a => a.href)")
        assert len(links) > 20
        for link in links:
            parts = urlsplit(link)
            assert f"{parts.scheme}://{parts.netloc}" == LS_URL and parts.path == "/projects/7/data"
            assert int(parse_qs(parts.query)["task"][0]) in set(ranking["task_id"])
        item_links = browser.evaluate(
            "[...document.querySelectorAll('#flagged tbody tr')].map(r => r.cells[1].querySelector('a').href)"
        )
        assert [int(parse_qs(urlsplit(link).query)["task"][0]) for link in item_links] == flagged[
            "task_id"
        ].tolist()
        # the tier filter shows exactly that tier's rows
        for tier in TIERS:
            browser.select("#filter-tier", tier)
            visible = browser.evaluate(
                "[...document.querySelectorAll('#flagged tbody tr')].filter(r => !r.hidden)"
                ".map(r => +r.dataset.item)"
            )
            assert visible == flagged.loc[flagged["tier"] == tier, "task_id"].tolist(), tier
        browser.select("#filter-tier", "likely error")
        browser.screenshot(tmp_path / "report-likely-errors.png")
        browser.select("#filter-tier", "")
        # the class-pair filter, from the confusion table's button
        pair = browser.evaluate("document.querySelector('[data-set-pair]').dataset.setPair")
        given, suggested = pair.split(" → ")
        browser.click("[data-set-pair]")
        expected = flagged.loc[
            (flagged["current_label"] == given) & (flagged["suggested_label"] == suggested), "task_id"
        ].tolist()
        assert browser.evaluate("document.getElementById('filter-pair').value") == pair
        assert browser.count("#flagged tbody tr", visible=True) == len(expected) >= 1
        browser.select("#filter-pair", "")
        # "supported only by flagged items"
        browser.evaluate("(c => { c.checked = true; c.dispatchEvent(new Event('change')); })"
                         "(document.getElementById('filter-supported'))")  # fmt: skip
        assert browser.count("#flagged tbody tr", visible=True) == int(
            flagged["supported_only_by_flagged"].sum()
        )
        browser.drain(0.3)
        assert not browser.errors, [str(error) for error in browser.errors]
    with Image.open(tmp_path / "report.png") as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for method in ("self_influence", "loss"):
        colour = np.array([int(METHOD_COLOURS[method][i : i + 2], 16) for i in (1, 3, 5)])
        matches = int((np.abs(pixels - colour).sum(axis=1) < 30).sum())
        assert matches > 150, f"the {method} line ({METHOD_COLOURS[method]}) is not on screen ({matches} px)"


def test_report_without_label_studio_has_no_links(tmp_path) -> None:
    from relabel.report import write_report

    ranking = pd.DataFrame(
        {
            "task_id": [1, 2],
            "current_label": ["a", "b"],
            "suggested_label": ["b", "b"],
            "predicted_probability": [0.9, 0.8],
            "self_influence": [2.0, 1.0],
        }
    )
    page = write_report(tmp_path, ranking, n_flagged=2, score_plot=False)["report_html"].read_text()
    assert "http" not in page  # no links out: only the jump links within the page
    assert set(re.findall(r'href="([^"]*)"', page)) == {"#top", "#flagged-items", "#by-class"}
    assert 'id="filter-tier"' not in page  # no triage columns, no tier filter


def test_report_shows_text_snippets_escaped_and_truncated(tmp_path) -> None:
    from relabel.report import write_report

    ranking = pd.DataFrame(
        {
            "task_id": [11, 12, 13],
            "current_label": ["spam", "ham", "spam"],
            "suggested_label": ["ham", "ham", "spam"],
            "predicted_probability": [0.9, 0.8, 0.7],
            "self_influence": [3.0, 2.0, 1.0],
            "loss": [2.5, 0.2, 0.1],
        }
    )
    previews = {11: "<b>win</b> a prize " + "x" * 400, 12: "hello there"}
    paths = write_report(tmp_path, ranking, n_flagged=2, previews=previews, score_plot=False)
    page = paths["report_html"].read_text()
    assert "&lt;b&gt;win&lt;/b&gt; a prize" in page and "<b>win</b>" not in page
    assert "x" * 400 not in page and "…" in page
    assert "hello there" in page
    assert 'data-item="13"' not in page  # only the flagged rows are listed
    assert pd.read_csv(paths["ranking_csv"])["rank"].tolist() == [1, 2, 3]


def test_report_says_when_it_lists_only_part_of_the_flagged_items(tmp_path) -> None:
    from relabel.report import write_report

    ranking = pd.DataFrame(
        {
            "task_id": range(10),
            "current_label": ["a"] * 10,
            "suggested_label": ["b"] * 10,
            "predicted_probability": [0.9] * 10,
            "self_influence": np.arange(10, 0, -1, dtype=float),
            "flagged": [True] * 6 + [False] * 4,
        }
    )
    page = write_report(tmp_path, ranking, score_plot=False, max_rows=4)["report_html"].read_text()
    assert "lists the first 4 of the 6 flagged items" in page
    assert len(re.findall(r"<tr data-item=", page)) == 4


def test_report_lists_the_items_first_with_jump_links(audit_report) -> None:
    """Headless Chromium: the flagged items come before the class tables and the plot, the jump links lead
    to each section, and no stale warning shows while no later sync is recorded."""
    html_path = Path(audit_report["paths"]["report_html"]).resolve()
    with Browser(width=1366, height=768) as browser:
        browser.goto(html_path.as_uri())
        browser.wait_for_selector("#flagged tbody tr", visible=True)
        tops = browser.evaluate(
            "['jump', 'flagged-items', 'flagged', 'by-class', 'confusions', 'scores']"
            ".map(id => document.getElementById(id).getBoundingClientRect().top + window.scrollY)"
        )
        assert tops == sorted(tops), tops  # links, then the list, then the class tables, then the plot
        assert tops[1] < 768  # the list's heading is on the first screen
        assert browser.text("#jump a") == "Flagged items (20)"
        for target in ("by-class", "scores", "flagged-items"):
            browser.click(f'#jump a[href="#{target}"]')
            # the section's heading at the top of the window (or the page scrolled to its end)
            browser.wait_for(
                f"(r => Math.abs(r.top) < 5 || (r.top >= 0 && r.top < innerHeight && "
                "scrollY + innerHeight >= document.documentElement.scrollHeight - 2))"
                f"(document.getElementById('{target}').getBoundingClientRect())"
            )
        # "only: likely error (n)" shows just that tier's rows
        tiers = (
            pd.read_parquet(audit_report["paths"]["ranking_parquet"]).query("flagged")["tier"].value_counts()
        )
        for tier in TIERS:
            if tiers.get(tier, 0):
                browser.click(f'#jump a[data-set-tier="{tier}"]')
                assert browser.count("#flagged tbody tr", visible=True) == tiers[tier], tier
                assert browser.evaluate("document.getElementById('filter-tier').value") == tier
        browser.select("#filter-tier", "")
        browser.click("#scores a.top")
        browser.wait_for("Math.abs(document.getElementById('top').getBoundingClientRect().top) < 1")
        assert browser.count("#stale", visible=True) == 0
        browser.drain(0.3)
        assert not browser.errors, [str(error) for error in browser.errors]


def test_a_sync_recorded_after_the_audit_marks_the_report_stale(audit_report, tmp_path) -> None:
    """record_sync fills the page's JSON block; the page compares it with its own audit time: a sync before
    the audit shows nothing, one after it shows the warning (headless Chromium), and stale_note agrees."""
    import shutil
    from datetime import datetime, timedelta

    from relabel.errors import InputError
    from relabel.report import record_sync, stale_note

    folder = tmp_path / "report"
    shutil.copytree(Path(audit_report["paths"]["report_html"]).parent, folder)
    generated = datetime.fromisoformat(json.loads((folder / "audit.json").read_text())["generated"])
    page = (folder / "report.html").read_text()
    assert f'<meta name="relabel-generated" content="{generated.isoformat()}">' in page
    earlier = (generated - timedelta(minutes=5)).isoformat()
    later = (generated + timedelta(hours=2)).isoformat()
    listed = audit_report["table"]["task_id"].head(20).tolist()
    states = {str(listed[0]): "reviewed", str(listed[2]): "skipped", str(listed[3]): "pending"}
    for synced_at, stale in ((earlier, False), (later, True)):
        facts = {"source_project_id": 7, "synced_at": synced_at, "reviewed": 3, "note": "</script>"}
        record_sync(folder, {**facts, "states": states})
        assert (stale_note(folder) is not None) == stale
        with Browser(width=1366, height=768) as browser:
            browser.goto((folder / "report.html").resolve().as_uri())
            browser.wait_for_selector("#flagged tbody tr", visible=True)
            assert browser.count("#stale", visible=True) == int(stale)
            if stale:
                shown = browser.text("#stale")  # times as "2026-12-02 19:10 UTC"
                assert f"synced {later[:16].replace('T', ' ')} UTC: 3 reviewed in the review project" in shown
                assert f"this audit: {generated.isoformat()[:16].replace('T', ' ')} UTC" in shown
                assert (
                    browser.evaluate("document.getElementById('stale').getBoundingClientRect().bottom") < 768
                )
            # the sync's reviewed/skipped marks on the listed items, only when the sync is newer
            marks = browser.evaluate(
                "Object.fromEntries([...document.querySelectorAll('#flagged tbody tr')]"
                ".filter(r => r.querySelector('.review-mark.synced'))"
                ".map(r => [r.dataset.item, r.querySelector('.review-mark').textContent]))"
            )
            assert marks == ({str(listed[0]): "reviewed", str(listed[2]): "skipped"} if stale else {})
            assert browser.count("#flagged tbody tr", visible=True) == 20  # the page still works
            browser.drain(0.3)
            assert not browser.errors, [str(error) for error in browser.errors]
    assert later in stale_note(folder)
    with pytest.raises(InputError, match="is the report of project 7, not of project 8"):
        record_sync(folder, {"source_project_id": 8, "synced_at": later})
    with pytest.raises(InputError, match=r"no report\.html and audit\.json"):
        record_sync(tmp_path, {"source_project_id": 7, "synced_at": later})


def test_report_marks_items_already_reviewed_or_skipped(tmp_path) -> None:
    from relabel.report import write_report

    ranking = pd.DataFrame(
        {
            "task_id": [21, 22, 23],
            "current_label": ["a", "b", "a"],
            "suggested_label": ["b", "a", "b"],
            "predicted_probability": [0.9, 0.8, 0.7],
            "self_influence": [3.0, 2.0, 1.0],
            "review_state": ["reviewed", "skipped", "pending"],  # as the pipeline adds it after a push
        }
    )
    html_path = write_report(tmp_path, ranking, n_flagged=3, score_plot=False)["report_html"].resolve()
    with Browser(width=1366, height=768) as browser:
        browser.goto(html_path.as_uri())
        browser.wait_for_selector("#flagged tbody tr", visible=True)
        marks = browser.evaluate(
            "[...document.querySelectorAll('#flagged tbody tr')].map(r => "
            "[r.dataset.item, [...r.cells[1].querySelectorAll('.review-mark')].map(m => m.textContent)])"
        )
        assert marks == [["21", ["reviewed"]], ["22", ["skipped"]], ["23", []]]
        assert browser.count("#flagged .review-mark", visible=True) == 2
    assert pd.read_csv(tmp_path / "ranking.csv")["review_state"].tolist() == [
        "reviewed",
        "skipped",
        "pending",
    ]
