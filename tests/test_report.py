"""Audit reports: the files exist, the HTML is self-contained, and headless Chromium shows the plot."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from relabel.comparison import METHOD_COLOURS
from relabel.dataset import LabeledDataset
from relabel.noise import inject_label_noise
from relabel.report import write_audit_report
from relabel.scorer import SuspicionScorer
from relabel.selection import ranking_table

CHROMIUM = "/usr/bin/chromium"


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
        source={"project_id": 7, "project_title": "digits <test> & co"},
    )
    X = images.reshape(n_items, -1) / 16.0
    scorer = SuspicionScorer(l2=1e-2).fit(X, list(dataset.labels), classes=classes)
    scores = scorer.scores(("self_influence", "loss", "margin"))
    table = ranking_table(dataset, scores, "self_influence", n_flagged=20)
    report_dir = tmp_path_factory.mktemp("report")
    paths = write_audit_report(
        report_dir, dataset, scorer, table, method="self_influence", n_flagged=20, summary={"project": 7}
    )
    return {"paths": paths, "table": table, "dataset": dataset, "noisy": noisy}


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
    # no external assets: every src is a data URI, no stylesheet/script links
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert "digits &lt;test&gt; &amp; co" in page  # titles are escaped
    table = audit_report["table"]
    for task_id in table["task_id"].head(20):
        assert f"<td>{task_id}</td>" in page
    assert page.count('class="thumb"') == 20  # one thumbnail per flagged item
    assert page.count("supports its label") + page.count("opposes it") >= 20  # explanations per item
    assert str(table["task_id"].iloc[20]) not in re.findall(r"<td>(\d+)</td>", page)


def test_report_opens_in_headless_chromium_and_shows_the_plot(audit_report, tmp_path) -> None:
    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    assert chromium, "chromium is not installed: apt-get install -y chromium (the report test needs it)"
    screenshot = tmp_path / "screenshot.png"
    html_path = Path(audit_report["paths"]["report_html"]).resolve()
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1200,2000",
        html_path.as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.exists(), f"no screenshot (exit {completed.returncode}): {completed.stderr[-2000:]}"
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for method in ("self_influence", "loss"):
        colour = np.array([int(METHOD_COLOURS[method][i : i + 2], 16) for i in (1, 3, 5)])
        matches = int((np.abs(pixels - colour).sum(axis=1) < 30).sum())
        assert matches > 150, f"the {method} line ({METHOD_COLOURS[method]}) is not on screen ({matches} px)"


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
    assert "<td>13</td>" not in page  # only the flagged rows are listed
    assert pd.read_csv(paths["ranking_csv"])["rank"].tolist() == [1, 2, 3]
