"""Audit reports: ``ranking.csv``, ``ranking.parquet``, one self-contained ``report.html``, and what
``relabel explain --from DIR`` needs (``explain.parquet`` and ``audit.json``).

The HTML page is meant for a team lead working from it in the morning: what was audited, how many items were
flagged and how they triage (:mod:`relabel.triage`: likely error / ambiguous / review, and an estimate of the
project's label errors), a per-class summary (given → suggested label among the flagged items, estimated
errors per class), a plot of the suspicion scores, and the flagged items in rank order with a thumbnail
(images) or a text snippet, a link to the task in Label Studio, the given and the suggested label, every
method's score, and the training items that most support and most oppose each item's current label
(:meth:`relabel.SuspicionScorer.explain`), each with its own preview and link, flagged ones marked ⚑.
Filters (tier, class pair, "supported only by flagged items") hide rows in place.

Self-contained: every image is inlined as a ``data:image/png;base64`` URI, the CSS and the few lines of
JavaScript (the filters) are inline, so the file can be mailed or opened from a shared folder with no network
access (no CDN, no external resource; the only URLs are the links to Label Studio tasks).

Files are created with mode 0600 in a folder created 0700 (they hold annotator e-mails and task text), and
``ranking.csv`` cannot start a spreadsheet formula (:mod:`relabel.output`).

Explanations: influence(j → i) = g_jᵀ H⁻¹ g_i (see :mod:`relabel.influence.base`); > 0 means training item
j *supports* item i's current label (removing j would raise i's loss by ≈ influence/n nats), < 0 that it
*opposes* it.

``explain.parquet``: for every flagged item, its :data:`ARCHIVE_TOP` strongest supporters and opposers, one
row each: ``item``, ``role`` (supports/opposes), ``position`` (1 = strongest), ``id``, ``influence``,
``label``, ``flagged`` (the supporter/opposer is flagged too). ``audit.json``: the audit's facts (source,
method, classes, task link template, triage counts and the error estimate). Storing these pairwise numbers
(a few kB per hundred flagged items) rather than the fitted model is what keeps it small: the exact solver's
Cholesky factor has (p·K)² entries (≈ 49 GB for 7,850 features × 10 classes), and LiSSA models have none.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.explanations import explanations_for
from relabel.methods import COMPARISON_METHODS
from relabel.triage import TIERS

__all__ = ["explanations_for", "write_audit_report", "write_report"]

SCORE_COLUMNS = COMPARISON_METHODS  # every method of the registry, in its order
THUMBNAIL_PIXELS = 72
MINI_THUMBNAIL_PIXELS = 28
SNIPPET_CHARACTERS = 160
MINI_SNIPPET_CHARACTERS = 60
ARCHIVE_TOP = 10  # supporters and opposers kept per flagged item in explain.parquet
EXPLAIN_ARCHIVE = "explain.parquet"
AUDIT_JSON = "audit.json"
ARCHIVE_FORMAT = 1
TASK_LINK = "{url}/projects/{project_id}/data?task={{task_id}}"
SYNC_JSON = "sync.json"  # the last `relabel sync --report DIR` recorded into this folder
SYNC_ELEMENT_ID = "relabel-sync"  # report.html's JSON block that record_sync fills in
TOP_LINK = '<a class="top" href="#top">top ↑</a>'
STALE_BLOCK = (
    '<div class="stale" id="stale" hidden>This report is older than the last <code>relabel sync</code> '
    '(<span id="stale-synced"></span>; this audit: <span id="stale-generated"></span>): reviewers\' '
    "decisions since the audit are not in it. Run the audit again for a current list.</div>\n"
)


def _plain(value: Any) -> Any:
    """numpy scalar → Python scalar (stable dict keys and JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def thumbnail_png(image_bytes: bytes, pixels: int = THUMBNAIL_PIXELS) -> bytes | None:
    """A PNG thumbnail (longest side ``pixels``, nearest-neighbour for tiny images) or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            image = image.convert("RGB")
            scale = pixels / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            resample = Image.Resampling.NEAREST if max(image.size) < pixels else Image.Resampling.LANCZOS
            buffer = io.BytesIO()
            image.resize(size, resample).save(buffer, format="PNG")
            return buffer.getvalue()
    except Exception:  # a preview is optional: an unreadable image shows as "no preview"
        return None


def score_plot_png(ranking: pd.DataFrame, n_flagged: int, methods: Sequence[str]) -> bytes:
    """PNG: each method's score, normalised to [0, 1], against the item's rank by that method.

    The flagged region (rank ≤ n_flagged) is shaded; a steep drop before the cut-off means the flagged
    items stand out clearly from the rest.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from relabel.comparison import METHOD_COLOURS

    figure, axes = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    n_items = len(ranking)
    for method in methods:
        values = np.sort(ranking[method].to_numpy(dtype=float))[::-1]
        finite = values[np.isfinite(values)]
        if not len(finite):
            continue
        low, high = finite.min(), finite.max()
        normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
        axes.plot(
            np.arange(1, n_items + 1),
            normalised,
            color=METHOD_COLOURS.get(method),
            linewidth=2.4,
            label=method,
        )
    axes.axvspan(0.5, n_flagged + 0.5, color="#f2c14e", alpha=0.25, label=f"flagged (top {n_flagged})")
    axes.set_xscale("log")
    axes.set_xlabel("rank (1 = most suspicious), log scale")
    axes.set_ylabel("score, scaled to [0, 1]")
    axes.set_title("Suspicion scores by rank", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    png = _figure_png(figure)
    plt.close(figure)
    return png


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px}
.meta{color:#666;font-size:13px} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{background:#f5f6f8;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:13px} th,td{border-bottom:1px solid #e3e3e3;padding:6px 8px;
vertical-align:top;text-align:left} th{background:#fafafa;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums} .changed{color:#b00020;font-weight:600}
.snippet{max-width:340px;font-size:12px;color:#333} .why{font-size:12px;min-width:260px}
.why ul{margin:2px 0 6px 16px;padding:0} .sup{color:#1b7f3b} .opp{color:#b00020}
img.plot{max-width:100%;border:1px solid #eee}
img.thumb,img.minithumb{image-rendering:pixelated;border:1px solid #ddd}
.note{color:#555;font-size:12px;max-width:900px}
.why li{list-style:none;margin:2px 0} .why img{vertical-align:middle;margin-right:4px}
.mini{color:#555}
.tier{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.tier-likely-error{background:#fde2e1;color:#8a1c1c} .tier-ambiguous{background:#fff3cd;color:#7a5b00}
.tier-review{background:#e7eefc;color:#24467a}
.review-mark{font-size:11px;border-radius:8px;padding:0 6px;margin-left:4px;background:#e3f4e6;color:#1f5f2b}
.review-mark.skipped{background:#eee;color:#555} .badge{font-size:11px;background:#fde2e1;color:#8a1c1c;
border-radius:4px;padding:1px 5px;white-space:nowrap}
.filters{background:#f5f6f8;border-radius:6px;padding:8px 12px;margin:10px 0;font-size:13px}
.filters label{margin-right:16px} table.small td,table.small th{padding:3px 8px}
button.pair{font-size:12px;border:1px solid #ccd;background:#fff;border-radius:4px;cursor:pointer}
a{color:#1a55b8} nav.jump{margin:8px 0 4px;font-size:14px} a.top{font-size:12px;font-weight:normal}
.stale{background:#fff3cd;border:1px solid #e0c36a;color:#5c4500;border-radius:6px;padding:8px 12px;
margin:10px 0;font-size:14px;max-width:900px}
"""


def _format_score(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not np.isfinite(number):
        return "—"
    return f"{number:.3g}"


def _preview_cell(preview: Any) -> str:
    if preview is None:
        return "<td></td>"
    if isinstance(preview, (bytes, bytearray)):
        png = thumbnail_png(bytes(preview))
        if png is None:
            return "<td><i>no preview</i></td>"
        return f'<td><img class="thumb" src="{png_data_uri(png)}" alt="item image"></td>'
    text = str(preview)
    short = text if len(text) <= SNIPPET_CHARACTERS else text[:SNIPPET_CHARACTERS].rstrip() + "…"
    return f'<td class="snippet">{html.escape(short)}</td>'


def _mini_preview(preview: Any) -> str:
    """A supporter's or opposer's preview in the explanation list: a small thumbnail or a short snippet."""
    if preview is None:
        return ""
    if isinstance(preview, (bytes, bytearray)):
        png = thumbnail_png(bytes(preview), MINI_THUMBNAIL_PIXELS)
        return "" if png is None else f'<img class="minithumb" src="{png_data_uri(png)}" alt="">'
    text = str(preview)
    short = text if len(text) <= MINI_SNIPPET_CHARACTERS else text[:MINI_SNIPPET_CHARACTERS].rstrip() + "…"
    return f'<span class="mini">“{html.escape(short)}”</span> '


def _item_link(item: Any, task_url: str | None, text: str | None = None) -> str:
    """The item id (or ``text``) linked to its task when ``task_url`` (a ``{task_id}`` template) is given."""
    label = html.escape(str(item) if text is None else text)
    if not task_url:
        return label
    href = html.escape(task_url.format(task_id=item), quote=True)
    return f'<a href="{href}" target="_blank" rel="noopener">{label}</a>'


def _explanation_cell(
    explanation: pd.DataFrame | None,
    flagged: set[Any],
    previews: Mapping[Any, bytes | str] | None = None,
    task_url: str | None = None,
    top: int | None = None,
) -> str:
    if explanation is None or len(explanation) == 0:
        return '<td class="why"></td>'
    previews = previews or {}
    parts = []
    for role, css, heading in (("supports", "sup", "supports its label"), ("opposes", "opp", "opposes it")):
        rows = explanation[explanation["role"] == role]
        if top is not None:
            rows = rows.head(top)
        if len(rows):
            items = "".join(
                "<li>"
                + _mini_preview(previews.get(_plain(row.id)))
                + _item_link(_plain(row.id), task_url, f"#{row.id}")
                + f" ({html.escape(str(row.label))}): {row.influence:+.3g}"
                + (" <b title='also flagged'>⚑</b>" if _plain(row.id) in flagged else "")
                + "</li>"
                for row in rows.itertuples()
            )
            parts.append(f'<div class="{css}">{heading}:</div><ul>{items}</ul>')
    return f'<td class="why">{"".join(parts)}</td>'


def write_report(
    report_dir: str | Path,
    ranking: pd.DataFrame,
    *,
    method: str = "self_influence",
    n_flagged: int | None = None,
    id_column: str = "task_id",
    title: str = "relabel audit",
    summary: Mapping[str, Any] | None = None,
    previews: Mapping[Any, bytes | str] | None = None,
    explanations: Mapping[Any, pd.DataFrame] | None = None,
    plots: Sequence[tuple[str, bytes | str | Path]] = (),
    score_plot: bool = True,
    max_rows: int = 200,
    task_url: str | None = None,
    estimate: Any = None,
    explain_top: int | None = None,
    generated: datetime | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``ranking.csv``, ``ranking.parquet`` and ``report.html`` into ``report_dir``; returns the paths.

    ``ranking``: one row per item (e.g. :func:`relabel.selection.ranking_table`): ``id_column``, ``rank`` (1 =
    most suspicious by ``method``; computed from ``method`` when absent), ``current_label``,
    ``suggested_label``, ``predicted_probability``, and any of the score columns (higher = more suspicious);
    optionally the triage columns of :func:`relabel.triage.assign_tiers` (``tier``,
    ``supported_only_by_flagged``, ``estimated_error``), shown as a column, a badge and per-class counts.
    ``n_flagged``: how many top items were flagged (default: the ``flagged`` column's count, else 20).
    ``summary``: extra key → value facts shown as cards (e.g. {"project": 3, "labeled tasks": 1797}).
    ``previews``: item id → encoded image bytes (shown as a thumbnail) or text (shown as a snippet), for the
    listed items and for their supporters/opposers. ``explanations``: item id → DataFrame from
    :func:`explanations_for` (the first ``explain_top`` of each role are shown; default all).
    ``plots``: (caption, PNG bytes or a PNG file path) shown above the table; with ``score_plot`` a
    score-by-rank plot is added first. ``task_url``: a link template with ``{task_id}`` (e.g.
    ``http://ls:8080/projects/3/data?task={task_id}``), or None for no links. ``estimate``: a
    :class:`relabel.triage.ErrorEstimate` for the per-class error estimate (else the ``estimated_error``
    column is counted, when present). The HTML table shows the flagged items up to ``max_rows``.
    ``notes``: lines shown under the summary cards (e.g. why ``model="auto"`` chose the model).
    ``generated``: when the audit ran (UTC; default now): shown, and compared by the page with the time of
    the last ``relabel sync`` recorded into it (:func:`record_sync`) for the stale warning.

    Page order: the summary cards, jump links, the stale warning (hidden until a later sync is recorded),
    the flagged items (filters, then the table), the per-class summary, the score plots.
    """
    from relabel.output import private_folder, write_private_text

    generated = generated or datetime.now(UTC)
    directory = private_folder(report_dir, "report folder")
    ranking = _ranked(ranking, method, id_column)
    if n_flagged is None:
        n_flagged = int(ranking["flagged"].sum()) if "flagged" in ranking.columns else min(20, len(ranking))
    paths = _write_tables(directory, ranking)

    score_columns = [column for column in SCORE_COLUMNS if column in ranking.columns]
    figures = _report_figures(ranking, n_flagged, score_columns, plots, score_plot)
    shown = _shown_rows(ranking, n_flagged, max_rows)
    triaged = "tier" in shown.columns
    flagged_ids = _flagged_ids(ranking, shown, id_column)
    rows_html = [
        _table_row(row, ranking, score_columns, id_column, previews or {}, explanations or {}, flagged_ids,
                   task_url=task_url, explain_top=explain_top, triaged=triaged)
        for _, row in shown.iterrows()
    ]  # fmt: skip
    n_listed = _count_flagged(ranking, n_flagged)
    sections = (
        _summary_block(title, _summary_cards(ranking, shown, n_flagged, method, estimate, summary), generated)
        + "".join(f"<p class='note model-choice'>{html.escape(note)}</p>\n" for note in notes),
        _jump_links(n_listed, bool(figures), shown["tier"].value_counts().to_dict() if triaged else None),
        STALE_BLOCK,
        _table_block(
            _header_cells(score_columns, triaged),
            rows_html,
            _filter_block(shown, triaged) + _truncation_note(len(shown), n_listed),
        ),
        _class_block(shown, ranking, estimate),
        _plot_block(figures),
    )
    write_private_text(paths["report_html"], _page(title, generated, sections))
    return paths


def _page(title: str, generated: datetime, sections: Sequence[str]) -> str:
    """The whole HTML page: head, ``sections`` in order, the (empty) last-sync JSON block that
    :func:`record_sync` fills in, and the page's script."""
    return (
        _page_head(title, generated)
        + "".join(sections)
        + f'<script id="{SYNC_ELEMENT_ID}" type="application/json">null</script>\n'
        + f"<script>{SCRIPT}</script>\n"
        + "</body></html>\n"
    )


def _summary_cards(
    ranking: pd.DataFrame,
    shown: pd.DataFrame,
    n_flagged: int,
    method: str,
    estimate: Any,
    summary: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The report's head cards: counts, tiers, the error estimate, the method, then ``summary``."""
    cards: dict[str, Any] = {
        "items ranked": len(ranking),
        "flagged for review": n_flagged,
        "flagged where the model disagrees": _count_changed(shown),
    }
    if "tier" in shown.columns:
        tiers = ranking["tier"].value_counts()
        cards.update({f"tier: {tier}": int(tiers.get(tier, 0)) for tier in TIERS})
    total_estimate = _estimated_total(ranking, estimate)
    if total_estimate is not None:
        cards["estimated label errors in the project"] = total_estimate
    cards["ranked by"] = method
    cards.update(summary or {})
    return cards


def _flagged_ids(ranking: pd.DataFrame, shown: pd.DataFrame, id_column: str) -> set[Any]:
    """Every flagged item (the ``flagged`` column, else the listed rows): the ⚑ marks in explanations."""
    if id_column not in ranking.columns:
        return set()
    if "flagged" in ranking.columns and ranking["flagged"].any():
        return {_plain(value) for value in ranking.loc[ranking["flagged"].astype(bool), id_column]}
    return {_plain(value) for value in shown[id_column]}


def _count_flagged(ranking: pd.DataFrame, n_flagged: int) -> int:
    if "flagged" in ranking.columns and ranking["flagged"].any():
        return int(ranking["flagged"].astype(bool).sum())
    return n_flagged


def _truncation_note(n_listed: int, n_flagged: int) -> str:
    """A line saying the table lists only the first ``n_listed`` of ``n_flagged`` items (when it does)."""
    if n_listed >= n_flagged:
        return ""
    return (
        f'<p class="note">The table lists the first {n_listed} of the {n_flagged} flagged items; '
        "ranking.csv holds them all.</p>\n"
    )


def _estimated_total(ranking: pd.DataFrame, estimate: Any) -> int | str | None:
    """The estimate's count with its 95 % interval ("152 (95 % interval 131–175)"), else the number of
    items marked ``estimated_error``, else None."""
    if estimate is not None:
        low, high = getattr(estimate, "interval", (estimate.total, estimate.total))
        return f"{int(estimate.total)} (95 % interval {low}–{high})"
    if "estimated_error" in ranking.columns:
        return int(ranking["estimated_error"].astype(bool).sum())
    return None


def _ranked(ranking: pd.DataFrame, method: str, id_column: str) -> pd.DataFrame:
    """A copy of ``ranking`` sorted by ``rank`` (1 first, stable), with a ``rank`` column computed from the
    ``method`` scores (higher score = lower rank number) inserted after ``id_column`` when absent."""
    from relabel.selection import suspicion_ranks

    ranking = ranking.copy()
    if "rank" not in ranking.columns:
        ranking.insert(
            1 if id_column in ranking.columns else 0, "rank", suspicion_ranks(ranking[method].to_numpy())
        )
    return ranking.sort_values("rank", kind="stable").reset_index(drop=True)


def _write_tables(directory: Path, ranking: pd.DataFrame) -> dict[str, Path]:
    """Write every row of ``ranking`` to ``ranking.csv`` (spreadsheet-safe text) and ``ranking.parquet`` (no
    index; both mode 0600, see :mod:`relabel.output`); returns the paths of those two and of the
    ``report.html`` still to be written."""
    from relabel.output import write_csv, write_parquet

    paths = {
        "ranking_csv": directory / "ranking.csv",
        "ranking_parquet": directory / "ranking.parquet",
        "report_html": directory / "report.html",
    }
    write_csv(ranking, paths["ranking_csv"])
    write_parquet(ranking, paths["ranking_parquet"])
    return paths


def _report_figures(
    ranking: pd.DataFrame,
    n_flagged: int,
    score_columns: Sequence[str],
    plots: Sequence[tuple[str, bytes | str | Path]],
    score_plot: bool,
) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) for each figure, in page order: the score-by-rank plot first (with
    ``score_plot`` and at least one score column; ``random`` left out unless it is the only one), then
    ``plots``, whose images are PNG bytes or a path to a PNG file (read here)."""
    figures: list[tuple[str, bytes]] = []
    if score_plot and score_columns:
        figures.append(
            (
                "Each method's scores, highest first. The shaded band is the flagged part of the ranking.",
                score_plot_png(
                    ranking, n_flagged, [m for m in score_columns if m != "random"] or score_columns
                ),
            )
        )
    for caption, image in plots:
        figures.append((caption, Path(image).read_bytes() if isinstance(image, (str, Path)) else image))
    return figures


def _shown_rows(ranking: pd.DataFrame, n_flagged: int, max_rows: int) -> pd.DataFrame:
    """The rows listed in the HTML table, in rank order: the rows marked ``flagged`` when any is (e.g.
    reviewed items skipped by nightly), else the top ``max(n_flagged, 1)``; at most ``max_rows`` rows."""
    if "flagged" in ranking.columns and ranking["flagged"].any():
        return ranking[ranking["flagged"].astype(bool)].head(max_rows)
    return ranking.head(min(max(n_flagged, 1), max_rows))


def _count_changed(shown: pd.DataFrame) -> int:
    """How many listed items have a suggested label different from the given one (0 without both columns)."""
    if {"current_label", "suggested_label"} <= set(shown.columns):
        return int((shown["current_label"].astype(str) != shown["suggested_label"].astype(str)).sum())
    return 0


def _header_cells(score_columns: Sequence[str], triaged: bool = False) -> list[str]:
    """The table's column headings (HTML): item facts, one per score column, then the explanations."""
    header_cells = ["rank", "item", "preview", "given label", "suggested label", "p(suggested)"]
    if triaged:
        header_cells += ["tier", "support"]
    header_cells += [f"{column}<br><small>(rank)</small>" for column in score_columns]
    header_cells.append("strongest training items (influence on this item's loss)")
    return header_cells


def _score_cell(ranking: pd.DataFrame, column: str, value: Any) -> str:
    """A score cell: the score (3 significant digits) over the item's rank by that score among all rows of
    ``ranking`` (1 + the number of strictly higher scores, so ties share the best rank)."""
    column_rank = int(np.sum(ranking[column].to_numpy(dtype=float) > float(value))) + 1
    return f'<td class="num">{_format_score(value)}<br><small>({column_rank})</small></td>'


def _pair(given: Any, suggested: Any) -> str:
    return f"{given} → {suggested}"


def _tier_cells(row: pd.Series) -> list[str]:
    """The tier (a coloured pill) and the "supported only by flagged items" badge."""
    tier = str(row.get("tier", "") or "")
    css = "tier-" + tier.replace(" ", "-")
    supported = bool(row.get("supported_only_by_flagged", False))
    badge = (
        '<span class="badge" title="its strongest supporting items are all flagged themselves">'
        "only flagged support</span>"
        if supported
        else ""
    )
    gap = row.get("top_two_gap", np.nan)
    gap_note = f"<br><small>top-2 gap {_format_score(gap)}</small>" if pd.notna(gap) else ""
    return [f'<td><span class="tier {css}">{html.escape(tier)}</span>{gap_note}</td>', f"<td>{badge}</td>"]


def _table_row(
    row: pd.Series,
    ranking: pd.DataFrame,
    score_columns: Sequence[str],
    id_column: str,
    previews: Mapping[Any, bytes | str],
    explanations: Mapping[Any, pd.DataFrame],
    flagged_ids: set[Any],
    *,
    task_url: str | None = None,
    explain_top: int | None = None,
    triaged: bool = False,
) -> str:
    """One ``<tr>``: rank, item id (linked to its task), preview, given and suggested label (red when they
    differ), the predicted probability of the suggested label, the tier and support badge, each score with
    its rank, and the explanation cell. ``data-`` attributes carry what the filters match on."""
    item = _plain(row[id_column]) if id_column in row.index else _plain(row.name)
    given = row.get("current_label", "")
    suggested = row.get("suggested_label", "")
    changed = ' class="changed"' if str(given) != str(suggested) else ""
    cells = [
        f'<td class="num">{int(row["rank"])}</td>',
        f"<td>{_item_link(item, task_url)}{_review_mark(row)}</td>",
        _preview_cell(previews.get(item)),
        f"<td>{html.escape(str(given))}</td>",
        f"<td{changed}>{html.escape(str(suggested))}</td>",
        f'<td class="num">{_format_score(row.get("predicted_probability", np.nan))}</td>',
    ]
    if triaged:
        cells += _tier_cells(row)
    cells += [_score_cell(ranking, column, row[column]) for column in score_columns]
    cells.append(_explanation_cell(explanations.get(item), flagged_ids, previews, task_url, explain_top))
    attributes = {
        "data-item": str(item),
        "data-tier": str(row.get("tier", "") or ""),
        "data-pair": _pair(given, suggested),
        "data-supported": "1" if bool(row.get("supported_only_by_flagged", False)) else "0",
    }
    attribute_html = "".join(
        f' {key}="{html.escape(value, quote=True)}"' for key, value in attributes.items()
    )
    return f"<tr{attribute_html}>" + "".join(cells) + "</tr>"


def _review_mark(row: pd.Series) -> str:
    """A small mark after the item id when its review task was already reviewed or skipped (the
    ``review_state`` column the pipeline adds from the push; nothing for pending items or without it)."""
    state = str(row.get("review_state", "") or "")
    if state not in ("reviewed", "skipped"):
        return ""
    title = "a reviewer decided this item" if state == "reviewed" else "skipped: back in the reviewer's queue"
    return f' <span class="review-mark {state}" title="{title}">{state}</span>'


def _class_block(shown: pd.DataFrame, ranking: pd.DataFrame, estimate: Any = None) -> str:
    """The "By class" section: per given class, the items, the flagged ones, the flagged ones the model
    would relabel, and the estimated errors (when an estimate or an ``estimated_error`` column exists); then
    the given → suggested confusions among the flagged items, most frequent first, each a filter button."""
    if not {"current_label", "suggested_label"} <= set(shown.columns):
        return ""
    given_all = ranking["current_label"].astype(str)
    given = shown["current_label"].astype(str)
    suggested = shown["suggested_label"].astype(str)
    estimated = None
    if estimate is not None:
        estimated = {
            str(row["class"]): (int(row["estimated_errors"]), float(row["estimated_error_rate"]))
            for _, row in estimate.per_class.iterrows()
        }
    elif "estimated_error" in ranking.columns:
        counts = (
            ranking.loc[ranking["estimated_error"].astype(bool), "current_label"].astype(str).value_counts()
        )
        totals = given_all.value_counts()
        estimated = {
            name: (int(counts.get(name, 0)), counts.get(name, 0) / totals[name]) for name in totals.index
        }
    classes = list(dict.fromkeys(sorted(given_all.unique(), key=_natural_key)))
    head = ["class (given)", "items", "flagged", "flagged, model suggests another"]
    if estimated is not None:
        head.append("estimated errors (share)")
    rows = []
    for name in classes:
        cells = [
            html.escape(name),
            str(int((given_all == name).sum())),
            str(int((given == name).sum())),
            str(int(((given == name) & (suggested != name)).sum())),
        ]
        if estimated is not None:
            count, rate = estimated.get(name, (0, 0.0))
            cells.append(f"{count} ({rate:.1%})")
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    per_class = (
        '<table class="small" id="per-class"><thead><tr>'
        + "".join(f"<th>{cell}</th>" for cell in head)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    pairs = (
        pd.DataFrame({"given": given, "suggested": suggested})[given != suggested]
        .value_counts()
        .reset_index(name="count")
    )
    pair_rows = "".join(
        f"<tr><td>{html.escape(str(row.given))}</td><td>{html.escape(str(row.suggested))}</td>"
        f'<td class="num">{int(row.count)}</td><td><button class="pair" data-set-pair='
        f'"{html.escape(_pair(row.given, row.suggested), quote=True)}">show</button></td></tr>'
        for row in pairs.itertuples()
    )
    confusions = (
        '<table class="small" id="confusions"><thead><tr><th>given</th><th>suggested</th>'
        f"<th>flagged items</th><th></th></tr></thead><tbody>{pair_rows}</tbody></table>"
        if len(pairs)
        else "<p class='note'>The model agrees with the given label of every flagged item.</p>"
    )
    how = (
        html.escape(estimate.describe())
        if estimate is not None and hasattr(estimate, "describe")
        else "confident-learning count over all items with that label"
    )
    note = f"<p class='note' id='estimate-note'>Estimated errors: {how}.</p>" if estimated is not None else ""
    return (
        f'<h2 id="by-class">By class {TOP_LINK}</h2>\n'
        "<div style='display:flex;gap:40px;flex-wrap:wrap;align-items:flex-start'>"
        f"<div>{per_class}{note}</div><div><b>Given → suggested among the flagged items</b>{confusions}</div>"
        "</div>\n"
    )


def _natural_key(text: str) -> tuple[int, float, str]:
    """Sort class names numerically when they are numbers ("2" before "10"), else alphabetically."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _filter_block(shown: pd.DataFrame, triaged: bool) -> str:
    """The filter bar above the table: tier, given → suggested pair, "supported only by flagged items"."""
    tier_options = '<option value="">all</option>' + "".join(
        f'<option value="{html.escape(tier, quote=True)}">{html.escape(tier)}</option>' for tier in TIERS
    )
    pairs = pd.Series(
        [
            _pair(g, s)
            for g, s in zip(shown.get("current_label", []), shown.get("suggested_label", []), strict=False)
        ]
    ).value_counts()
    pair_options = '<option value="">all</option>' + "".join(
        f'<option value="{html.escape(str(pair), quote=True)}">'
        f"{html.escape(str(pair))} ({int(count)})</option>"
        for pair, count in pairs.items()
    )
    tier_filter = (
        f'<label>tier <select id="filter-tier">{tier_options}</select></label>'
        '<label><input type="checkbox" id="filter-supported"> '
        "only items supported only by flagged items</label>"
        if triaged
        else ""
    )
    return (
        '<div class="filters">'
        + tier_filter
        + f'<label>given → suggested <select id="filter-pair">{pair_options}</select></label>'
        + '<span id="filter-count"></span></div>\n'
    )


SCRIPT = """
(function () {
  var meta = document.querySelector('meta[name="relabel-generated"]');
  var block = document.getElementById('relabel-sync'), stale = document.getElementById('stale');
  var sync = null;
  try { sync = block ? JSON.parse(block.textContent) : null; } catch (error) { sync = null; }
  if (meta && sync && sync.synced_at && stale &&
      Date.parse(sync.synced_at) > Date.parse(meta.getAttribute('content'))) {
    var readable = function (iso) { return iso.replace('T', ' ').replace(/(:\\d\\d)?\\+00:00$/, ' UTC'); };
    var counts = ['reviewed', 'skipped', 'pending'].filter(function (key) {
      return typeof sync[key] === 'number';
    }).map(function (key) { return sync[key] + ' ' + key; });
    document.getElementById('stale-synced').textContent = 'synced ' + readable(sync.synced_at) +
      (counts.length ? ': ' + counts.join(', ') + ' in the review project' : '');
    document.getElementById('stale-generated').textContent = readable(meta.getAttribute('content'));
    stale.hidden = false;
    // the sync's state of each listed item's review task: reviewed / skipped marks as of that sync
    Array.prototype.forEach.call(document.querySelectorAll('#flagged tbody tr'), function (row) {
      var state = (sync.states || {})[row.dataset.item];
      if (state !== 'reviewed' && state !== 'skipped') return;
      var mark = row.querySelector('.review-mark');
      if (!mark) {
        mark = document.createElement('span');
        row.cells[1].appendChild(document.createTextNode(' '));
        row.cells[1].appendChild(mark);
      }
      mark.className = 'review-mark ' + state + ' synced';
      mark.textContent = state;
      mark.title = state + ' at the sync of ' + readable(sync.synced_at);
    });
  }
})();
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#flagged tbody tr'));
  var tier = document.getElementById('filter-tier'), pair = document.getElementById('filter-pair');
  var supported = document.getElementById('filter-supported');
  var count = document.getElementById('filter-count');
  function apply() {
    var shown = 0;
    rows.forEach(function (row) {
      var ok = (!tier || !tier.value || row.dataset.tier === tier.value) &&
               (!pair || !pair.value || row.dataset.pair === pair.value) &&
               (!supported || !supported.checked || row.dataset.supported === '1');
      row.hidden = !ok;
      if (ok) shown += 1;
    });
    if (count) count.textContent = shown + ' of ' + rows.length + ' items shown';
  }
  [tier, pair, supported].forEach(function (control) {
    if (control) control.addEventListener('change', apply);
  });
  Array.prototype.forEach.call(document.querySelectorAll('[data-set-tier]'), function (link) {
    link.addEventListener('click', function () {
      if (pair) pair.value = '';
      if (supported) supported.checked = false;
      if (tier) tier.value = link.getAttribute('data-set-tier');
      apply();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('[data-set-pair]'), function (button) {
    button.addEventListener('click', function () {
      if (tier) tier.value = '';
      if (supported) supported.checked = false;
      pair.value = button.getAttribute('data-set-pair');
      apply();
      document.getElementById('flagged').scrollIntoView();
    });
  });
  apply();
})();
"""


def _page_head(title: str, generated: datetime) -> str:
    """``<!DOCTYPE html>`` through ``<body>``: the escaped title, the audit time (``relabel-generated``,
    ISO 8601 UTC, read by the stale check) and the inline CSS (no external assets)."""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f'<meta name="relabel-generated" content="{_iso(generated)}">\n'
        f'<style>{CSS}</style></head><body id="top">\n'
    )


def _iso(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 to the second (``2026-12-02T15:42:08+00:00``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _jump_links(n_listed: int, has_plots: bool, tiers: Mapping[str, int] | None = None) -> str:
    """The links to the page's sections (the flagged items first) and, with ``tiers`` (tier → listed
    items), one per tier that shows only that tier's rows (the tier filter)."""
    links = [f'<a href="#flagged-items">Flagged items ({n_listed})</a>', '<a href="#by-class">By class</a>']
    if has_plots:
        links.append('<a href="#scores">Scores</a>')
    tier_links = [
        f'<a href="#flagged-items" data-set-tier="{html.escape(t)}">{html.escape(t)} ({tiers[t]})</a>'
        for t in TIERS
        if tiers and tiers.get(t)
    ]
    only = f" · only: {' · '.join(tier_links)}" if tier_links else ""
    return f'<nav class="jump" id="jump">Jump to: {" · ".join(links)}{only}</nav>\n'


def _summary_block(title: str, cards: Mapping[str, Any], generated_at: datetime) -> str:
    """The heading, the generation time (UTC, to the minute) and one card per key → value fact."""
    generated = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cards_html = "".join(
        f"<div class='card'><b>{html.escape(str(value))}</b><span>{html.escape(str(key))}</span></div>"
        for key, value in cards.items()
    )
    return (
        f"<h1>{html.escape(title)}</h1>\n"
        f'<div class="meta">generated {generated} ·\n'
        "ranking.csv and ranking.parquet next to this file hold every item</div>\n"
        f'<div class="cards">{cards_html}</div>\n'
    )


def _plot_block(figures: Sequence[tuple[str, bytes]]) -> str:
    """The "Scores" section: each (caption, PNG bytes) as an inline ``data:`` image with its caption."""
    figures_html = "".join(
        f'<figure><img class="plot" src="{png_data_uri(png)}" alt="{html.escape(caption)}">'
        f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
        for caption, png in figures
    )
    if not figures:
        return ""
    return f'<h2 id="scores">Scores {TOP_LINK}</h2>{figures_html}\n'


TABLE_NOTE = """\
<p class="note">Check these labels first. <span class="changed">Red</span> suggested labels differ from
the given label. Item ids link to the task in Label Studio. Tiers: <b>likely error</b> = the model prefers
another label and the label's strongest support comes only from other flagged items; <b>ambiguous</b> = the
model's two most probable classes are close; <b>review</b> = the rest. Scores: higher = more suspicious; the
small number is the item's rank by that score.
<b>self_influence</b> = g<sub>i</sub><sup>T</sup>H<sup>−1</sup>g<sub>i</sub>, how much the model had to bend
to fit this label (Koh &amp; Liang 2017); <b>loss</b> = −log p(given label). The last column lists the
training items that most <span class="sup">support</span> and most <span class="opp">oppose</span> the given
label: influence g<sub>j</sub><sup>T</sup>H<sup>−1</sup>g<sub>i</sub>; a flagged item supported mainly by
items that are themselves flagged (⚑) is a likely error.</p>
"""


def _table_block(header_cells: Sequence[str], rows_html: Sequence[str], filters: str = "") -> str:
    """The "Flagged items" section: how to read the table (``TABLE_NOTE``), the filters, then the table."""
    return (
        f'<h2 id="flagged-items">Flagged items, most suspicious first {TOP_LINK}</h2>\n'
        + TABLE_NOTE
        + filters
        + '<table id="flagged"><thead><tr>'
        + "".join(f"<th>{cell}</th>" for cell in header_cells)
        + "</tr></thead>\n"
        + f"<tbody>{''.join(rows_html)}</tbody></table>\n"
    )


def task_url_template(source: Mapping[str, Any] | None) -> str | None:
    """The link template (``{task_id}`` placeholder) of a Label Studio pull's tasks, from the dataset's
    ``source`` (``url`` and ``project_id``): ``{url}/projects/{project_id}/data?task={task_id}``, which opens
    the task in the project's Data Manager. None for other sources (files, toy datasets)."""
    source = source or {}
    if source.get("type", "label_studio") != "label_studio" or not source.get("url"):
        return None
    if source.get("project_id") is None:
        return None
    return TASK_LINK.format(url=str(source["url"]).rstrip("/"), project_id=int(source["project_id"]))


def write_audit_report(
    report_dir: str | Path,
    dataset: Any,
    scorer: Any,
    ranking: pd.DataFrame,
    *,
    method: str,
    n_flagged: int,
    explain_top: int = 3,
    title: str | None = None,
    summary: Mapping[str, Any] | None = None,
    max_rows: int = 200,
    triage: Any = None,
    model_choice: Any = None,
) -> dict[str, Path]:
    """The report of one audit: triage, previews and links from ``dataset``, explanations from ``scorer``.

    ``dataset``: the :class:`relabel.dataset.LabeledDataset` that was ranked; ``scorer``: the fitted
    :class:`relabel.SuspicionScorer` (its rows in ``dataset.ids`` order); ``ranking``: as
    :func:`relabel.selection.ranking_table` returns it (``task_id`` column; when a boolean ``flagged`` column
    is present, the flagged rows are the ones reported, in rank order). ``triage``: a
    :class:`relabel.triage.Triage` already computed for this ranking (e.g. by the pipeline, for the queue);
    computed here otherwise (every flagged item explained once, :data:`ARCHIVE_TOP` per role).
    ``model_choice``: what ``model="auto"`` chose (:class:`relabel.models.choice.ModelChoice`), shown.
    Writes ``ranking.csv``/``ranking.parquet`` (with the triage columns), ``report.html``, ``explain.parquet``
    and ``audit.json``; returns their paths (keys ``ranking_csv``, ``ranking_parquet``, ``report_html``,
    ``explain``, ``audit_json``).
    """
    from relabel.triage import triage_audit

    generated = datetime.now(UTC)
    if triage is None:
        triage = triage_audit(ranking, dataset, scorer, explain_top=max(explain_top, ARCHIVE_TOP))
    ids = np.asarray(dataset.ids)
    position_of = {_plain(item): position for position, item in enumerate(ids)}
    table = triage.table
    ordered = table.sort_values("rank", kind="stable")
    if "flagged" in ordered.columns and ordered["flagged"].any():
        ordered = ordered[ordered["flagged"].astype(bool)]
    listed = [_plain(item) for item in ordered["task_id"].head(min(n_flagged, max_rows))]
    previews: dict[Any, bytes | str] = {}
    if dataset.kind in ("image", "text"):
        wanted = list(listed)
        for item in listed:
            explanation = triage.explanations.get(item)
            if explanation is not None and explain_top:
                for role in ("supports", "opposes"):
                    wanted += [
                        _plain(j)
                        for j in explanation.loc[explanation["role"] == role, "id"].head(explain_top)
                    ]
        for item in dict.fromkeys(wanted):
            if item in position_of:
                previews[item] = dataset.inputs[position_of[item]]
    source = dataset.source or {}
    task_url = task_url_template(source)
    paths = write_report(
        report_dir,
        table,
        method=method,
        n_flagged=n_flagged,
        id_column="task_id",
        title=title
        or f"relabel audit — {source.get('project_title') or source.get('project_id') or ''}".rstrip(" —"),
        summary={**(summary or {}), **_model_cards(scorer, model_choice)},
        notes=() if model_choice is None else (model_choice.describe(),),
        previews=previews,
        explanations=triage.explanations if explain_top else {},
        max_rows=max_rows,
        task_url=task_url,
        estimate=triage.estimate,
        explain_top=explain_top,
        generated=generated,
    )
    paths.update(
        write_explain_archive(
            report_dir, triage, source=source, method=method, classes=dataset.classes, generated=generated
        )
    )
    return paths


def _model_cards(scorer: Any, model_choice: Any) -> dict[str, str]:
    """The "model" card: the fitted model's name (with what ``auto`` chose it on)."""
    summary = getattr(scorer, "fit_summary", None)
    if model_choice is not None:
        return {"model (chosen by auto)": f"{model_choice.model} on {model_choice.features}"}
    return {} if summary is None else {"model": summary.model}


def write_explain_archive(
    report_dir: str | Path,
    triage: Any,
    *,
    source: Mapping[str, Any] | None,
    method: str,
    classes: Sequence[Any],
    generated: datetime | None = None,
) -> dict[str, Path]:
    """Write ``explain.parquet`` (each flagged item's strongest supporters/opposers) and ``audit.json``
    (module docstring; ``generated``: the audit's time, default now); returns {"explain": path,
    "audit_json": path}."""
    from relabel.output import write_parquet, write_private_text

    directory = Path(report_dir)
    flagged = set(_plain(item) for item in triage.table.loc[triage.table["tier"] != "", "task_id"])
    frames = []
    for item, explanation in triage.explanations.items():
        frame = explanation.drop(columns=["row"], errors="ignore").copy()
        frame.insert(0, "item", _plain(item))
        frame.insert(2, "position", frame.groupby("role").cumcount() + 1)
        frame["label"] = frame["label"].astype(str)
        frame["flagged"] = [_plain(j) in flagged for j in frame["id"]]
        frames.append(frame)
    columns = ["item", "role", "position", "id", "influence", "label", "flagged"]
    archive = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    paths = {"explain": directory / EXPLAIN_ARCHIVE, "audit_json": directory / AUDIT_JSON}
    write_parquet(archive, paths["explain"])
    source = dict(source or {})
    facts = {
        "format": ARCHIVE_FORMAT,
        "generated": _iso(generated or datetime.now(UTC)),
        "source": {key: _plain(value) for key, value in source.items() if _json_scalar(value)},
        "task_url": task_url_template(source),
        "method": method,
        "classes": [str(name) for name in classes],
        "n_items": len(triage.table),
        "n_flagged": len(flagged),
        "explain_top": int(archive.groupby(["item", "role"]).size().max()) if len(archive) else 0,
        "triage": triage.as_dict(),
    }
    write_private_text(paths["audit_json"], json.dumps(facts, indent=1, default=str))
    return paths


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, np.generic))


ARCHIVE_COLUMNS = {  # column → must be a number; what `relabel explain --from` reads of each file
    EXPLAIN_ARCHIVE: {
        "item": False,
        "role": False,
        "position": True,
        "id": False,
        "influence": True,
        "label": False,
    },
    "ranking.parquet": {
        "task_id": False,
        "rank": True,
        "current_label": False,
        "suggested_label": False,
        "predicted_probability": True,
        "flagged": False,
    },
}
OPTIONAL_NUMBERS = ("self_influence",)  # read when present (ranking.parquet of a self-influence audit)


def read_explain_archive(report_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """(audit.json facts, explain.parquet, ranking.parquet) of an audit's report folder; InputError naming
    the missing file when the folder is not one (or predates the archive), and naming the file (and column)
    when one is damaged: a cut or foreign ``audit.json``, a file that is not Parquet, a missing column, a
    column that should hold numbers and does not, a cell holding a list or a struct."""
    from relabel.errors import InputError

    directory = Path(report_dir)
    missing = [
        name for name in (AUDIT_JSON, EXPLAIN_ARCHIVE, "ranking.parquet") if not (directory / name).is_file()
    ]
    if missing:
        raise InputError(
            f"{directory} is not an audit report folder with explanations (no {', '.join(missing)}); run "
            "`relabel audit ... --report DIR` first, or explain without --from (refits the model)"
        )
    facts = _read_audit_facts(directory / AUDIT_JSON)
    tables = [_read_archive_table(directory / name, columns) for name, columns in ARCHIVE_COLUMNS.items()]
    return facts, tables[0], tables[1]


_DAMAGED = "re-run `relabel audit ... --report DIR`, or explain without --from (refits the model)"


def _read_audit_facts(path: Path) -> dict[str, Any]:
    """``audit.json`` as a dict; InputError naming it when it is cut, not JSON, or not what audit writes."""
    from relabel.errors import InputError, shown

    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or error})") from None
    except (UnicodeDecodeError, ValueError):
        raise InputError(
            f"{path} is damaged (not complete JSON: cut off or not written by relabel); {_DAMAGED}"
        ) from None
    if not isinstance(facts, dict):
        raise InputError(f"{path} is damaged (a JSON {type(facts).__name__}, not an object); {_DAMAGED}")
    version = facts.get("format", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{path} is damaged (format {shown(version)} is not a whole number); {_DAMAGED}")
    if version > ARCHIVE_FORMAT:
        raise InputError(f"{path} was written by a newer relabel (format {version})")
    template = facts.get("task_url")
    if template is not None:
        try:
            template.format(task_id=1)
        except (AttributeError, KeyError, IndexError, ValueError):
            raise InputError(
                f"{path} is damaged (task_url {shown(template)} is not a link template); {_DAMAGED}"
            ) from None
    return facts


def _read_archive_table(path: Path, columns: Mapping[str, bool]) -> pd.DataFrame:
    """One Parquet file of the archive; InputError naming the file (and column) when it is not Parquet, lacks
    a column, holds a non-number where a number belongs, or a list or struct in a cell."""
    import pyarrow

    from relabel.errors import InputError, shown

    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError, TypeError, NotImplementedError, pyarrow.ArrowException) as error:
        detail = " ".join(str(error).split())[:120]
        raise InputError(f"{path} is damaged or not a Parquet file ({detail}); {_DAMAGED}") from None
    absent = [column for column in columns if column not in table.columns]
    if absent:
        raise InputError(f"{path} is damaged: no column {', '.join(absent)}; {_DAMAGED}")
    optional = [column for column in OPTIONAL_NUMBERS if column in table.columns]
    for column, numeric in {**columns, **dict.fromkeys(optional, True)}.items():
        values = table[column]
        for row, value in enumerate(values.tolist(), start=1):
            if isinstance(value, (list, tuple, dict, set, np.ndarray, bytes)):
                raise InputError(
                    f"{path} is damaged: row {row}, column {column!r} holds {shown(value, 40)}, not one "
                    f"value; {_DAMAGED}"
                )
        if numeric:
            number = pd.to_numeric(values, errors="coerce")
            unreadable = number.isna() if column not in optional else number.isna() & values.notna()
            bad = np.flatnonzero(unreadable.to_numpy())
            if len(bad):
                raise InputError(
                    f"{path} is damaged: row {int(bad[0]) + 1}, column {column!r} holds "
                    f"{shown(values.iloc[int(bad[0])], 40)}, not a number; {_DAMAGED}"
                )
    return table


def record_sync(report_dir: str | Path, sync: Mapping[str, Any]) -> Path:
    """Record a ``relabel sync`` in an audit's report folder, so the report can tell it is stale.

    ``sync``: the sync's facts (``synced_at``, ISO 8601 UTC, its counts, and ``states``: source task id →
    ``reviewed``/``skipped``/``pending``, the state of its review task, which the page shows as a mark on the
    listed items when the sync is newer than the audit); written to ``DIR/sync.json``
    (read by ``relabel explain --from``, :func:`stale_note`) and into ``report.html``'s JSON block
    ``<script id="relabel-sync">``, whose few lines of script compare it with the page's own audit time
    (``<meta name="relabel-generated">``) and show the stale warning when the sync came later: the page stays
    one static file (it can be mailed and still shows the warning) and loads nothing. InputError when the
    folder holds no report of a Label Studio audit of ``sync["source_project_id"]``.
    """
    from relabel.errors import InputError
    from relabel.output import write_private_text

    directory = check_sync_report(report_dir, sync.get("source_project_id"))
    page_path = directory / "report.html"
    payload = json.dumps(dict(sync), default=str, sort_keys=True)
    page = page_path.read_text(encoding="utf-8")
    start = page.rfind(f'<script id="{SYNC_ELEMENT_ID}" type="application/json">')
    if start < 0:
        raise InputError(f"--report {directory}: its report.html predates the stale warning; audit again")
    body_start = page.index(">", start) + 1
    body_end = page.index("</script>", body_start)
    # "</" cannot end the block early: JSON allows "<\/" for "</"
    page = page[:body_start] + payload.replace("</", "<\\/") + page[body_end:]
    write_private_text(page_path, page)
    return write_private_text(directory / SYNC_JSON, payload)


def check_sync_report(report_dir: str | Path, project_id: int | None) -> Path:
    """``report_dir`` when it holds an audit report (``report.html`` and ``audit.json``) of ``project_id``
    (any project when None); else InputError in one line."""
    from relabel.errors import InputError

    directory = Path(report_dir)
    if not (directory / "report.html").exists() or not (directory / AUDIT_JSON).exists():
        raise InputError(
            f"--report {directory}: no report.html and audit.json there; name the folder of "
            "`relabel audit --report DIR`"
        )
    try:
        facts = json.loads((directory / AUDIT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"--report {directory}: cannot read {AUDIT_JSON}: {error}") from None
    source = (facts.get("source") or {}) if isinstance(facts, dict) else None
    audited = source.get("project_id") if isinstance(source, dict) else None
    readable = isinstance(audited, (int, type(None))) and not isinstance(audited, bool)
    if not isinstance(source, dict) or not readable:
        raise InputError(
            f"--report {directory}: its {AUDIT_JSON} is damaged (not what `relabel audit` writes); name the "
            "folder of a complete `relabel audit --report DIR`"
        )
    if project_id is not None and audited is not None and int(audited) != int(project_id):
        raise InputError(
            f"--report {directory} is the report of project {audited}, not of project {project_id}"
        )
    return directory


def stale_note(report_dir: str | Path) -> str | None:
    """One line when the report folder's audit is older than the last ``relabel sync`` recorded into it
    (:func:`record_sync`), else None."""
    directory = Path(report_dir)
    try:
        facts = json.loads((directory / AUDIT_JSON).read_text(encoding="utf-8"))
        sync = json.loads((directory / SYNC_JSON).read_text(encoding="utf-8"))
        generated = datetime.fromisoformat(str(facts["generated"]))
        synced = datetime.fromisoformat(str(sync["synced_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if generated.tzinfo is None:  # audit.json written before times carried their zone: UTC
        generated = generated.replace(tzinfo=UTC)
    if synced <= generated:
        return None
    return (
        f"this report (audit of {_iso(generated)}) is older than the last `relabel sync` ({_iso(synced)}): "
        "reviewers' decisions since the audit are not in it; run the audit again for a current list"
    )
