"""Audit reports: ``ranking.csv``, ``ranking.parquet`` and one self-contained ``report.html``.

The HTML page is meant for a team lead reading it in the morning: what was audited, how many items were
flagged, a plot of the suspicion scores, and the flagged items in rank order with a thumbnail (images) or a
text snippet, the given and the suggested label, every method's score, and the training items that most
support and most oppose each item's current label (:meth:`relabel.SuspicionScorer.explain`).

Files are created with mode 0600 in a folder created 0700 (they hold annotator e-mails and task text), and
``ranking.csv`` cannot start a spreadsheet formula (:mod:`relabel.output`).

Self-contained: every image is inlined as a ``data:image/png;base64`` URI and the CSS is inline, so the file
can be mailed or opened from a shared folder with no network access (no CDN, no script).

Explanations: influence(j → i) = g_jᵀ H⁻¹ g_i (see :mod:`relabel.influence.base`); > 0 means training item
j *supports* item i's current label (removing j would raise i's loss by ≈ influence/n nats), < 0 that it
*opposes* it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.methods import COMPARISON_METHODS

SCORE_COLUMNS = COMPARISON_METHODS  # every method of the registry, in its order
THUMBNAIL_PIXELS = 72
SNIPPET_CHARACTERS = 160


def explanations_for(
    scorer: Any, ids: Sequence[Any], positions: Sequence[int], top: int = 5, block_size: int = 256
) -> dict[Any, pd.DataFrame]:
    """What :meth:`relabel.SuspicionScorer.explain` gives for each item position, for many items at once,
    with the training rows mapped to item ids.

    For a block of m items: H⁻¹ [g_i1 … g_im] in one solve (exact: Cholesky; LiSSA: one batched run), then a
    single chunked pass over the n training gradients gives the n × m matrix of influences g_jᵀ H⁻¹ g_i
    (instead of one pass per item). From the scorer's existing factorisation; no refit.

    Returns {item id: DataFrame(role "supports"/"opposes", row, id, influence, label)} where the ``top``
    largest positive influences support the item's current label and the ``top`` most negative oppose it;
    the item itself is left out; ``label`` is the training item's class as the scorer encodes it.
    """
    from relabel.influence.base import _to_numpy, index_chunks

    ids = np.asarray(ids)
    solver = scorer.solver
    gradients = solver.gradients
    explanations: dict[Any, pd.DataFrame] = {}
    positions = [int(position) for position in positions]
    for start in range(0, len(positions), block_size):
        block = np.array(positions[start : start + block_size])
        solved = solver.inverse_hvp(gradients.per_example_gradients(block))  # (m, p)
        influence = np.empty((gradients.n_items, len(block)))
        for rows in index_chunks(gradients.n_items, solver.chunk_size):
            influence[rows] = _to_numpy(gradients.per_example_gradients(rows) @ solved.T)
        for column, position in enumerate(block):
            explanations[_plain(ids[position])] = _explanation_table(
                influence[:, column], int(position), top, scorer, ids
            )
    return explanations


def _explanation_table(
    influence: np.ndarray, index: int, top: int, scorer: Any, ids: np.ndarray
) -> pd.DataFrame:
    """The ``top`` supporters (largest > 0) and opposers (most negative) of item ``index`` (not itself)."""
    from relabel.scorer import strongest_influences

    rows = strongest_influences(influence, index, top)
    return pd.DataFrame(
        {
            "role": [role for role, _ in rows],
            "row": [int(j) for _, j in rows],
            "id": [_plain(ids[j]) for _, j in rows],
            "influence": [float(influence[j]) for _, j in rows],
            "label": [scorer.classes[scorer.y[j]] for _, j in rows],
        }
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
img.plot{max-width:100%;border:1px solid #eee} img.thumb{image-rendering:pixelated;border:1px solid #ddd}
.note{color:#555;font-size:12px;max-width:900px}
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


def _explanation_cell(explanation: pd.DataFrame | None, flagged: set[Any]) -> str:
    if explanation is None or len(explanation) == 0:
        return '<td class="why"></td>'
    parts = []
    for role, css, heading in (("supports", "sup", "supports its label"), ("opposes", "opp", "opposes it")):
        rows = explanation[explanation["role"] == role]
        if len(rows):
            items = "".join(
                f"<li>#{html.escape(str(row.id))} ({html.escape(str(row.label))}): {row.influence:+.3g}"
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
) -> dict[str, Path]:
    """Write ``ranking.csv``, ``ranking.parquet`` and ``report.html`` into ``report_dir``; returns the paths.

    ``ranking``: one row per item (e.g. :func:`relabel.selection.ranking_table`): ``id_column``, ``rank`` (1 =
    most suspicious by ``method``; computed from ``method`` when absent), ``current_label``,
    ``suggested_label``, ``predicted_probability``, and any of the score columns (higher = more suspicious).
    ``n_flagged``: how many top items were flagged (default: the ``flagged`` column's count, else 20).
    ``summary``: extra key → value facts shown as cards (e.g. {"project": 3, "labeled tasks": 1797}).
    ``previews``: item id → encoded image bytes (shown as a thumbnail) or text (shown as a snippet).
    ``explanations``: item id → DataFrame from :func:`explanations_for`. ``plots``: (caption, PNG bytes or
    a PNG file path) shown above the table; with ``score_plot`` a score-by-rank plot is added first.
    The HTML table shows the top ``max(n_flagged, …)`` items up to ``max_rows``.
    """
    from relabel.output import private_folder, write_private_text

    directory = private_folder(report_dir, "report folder")
    ranking = _ranked(ranking, method, id_column)
    if n_flagged is None:
        n_flagged = int(ranking["flagged"].sum()) if "flagged" in ranking.columns else min(20, len(ranking))
    paths = _write_tables(directory, ranking)

    score_columns = [column for column in SCORE_COLUMNS if column in ranking.columns]
    figures = _report_figures(ranking, n_flagged, score_columns, plots, score_plot)
    shown = _shown_rows(ranking, n_flagged, max_rows)
    flagged_ids = {_plain(value) for value in shown[id_column]} if id_column in ranking else set()
    rows_html = [
        _table_row(row, ranking, score_columns, id_column, previews or {}, explanations or {}, flagged_ids)
        for _, row in shown.iterrows()
    ]
    cards = {
        "items ranked": len(ranking),
        "flagged for review": n_flagged,
        "flagged where the model disagrees": _count_changed(shown),
        "ranked by": method,
        **(summary or {}),
    }
    page = (
        _page_head(title)
        + _summary_block(title, cards)
        + _plot_block(figures)
        + _table_block(_header_cells(score_columns), rows_html)
        + "</body></html>\n"
    )
    write_private_text(paths["report_html"], page)
    return paths


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


def _header_cells(score_columns: Sequence[str]) -> list[str]:
    """The table's column headings (HTML): item facts, one per score column, then the explanations."""
    header_cells = ["rank", "item", "preview", "given label", "suggested label", "p(suggested)"]
    header_cells += [f"{column}<br><small>(rank)</small>" for column in score_columns]
    header_cells.append("strongest training items (influence on this item's loss)")
    return header_cells


def _score_cell(ranking: pd.DataFrame, column: str, value: Any) -> str:
    """A score cell: the score (3 significant digits) over the item's rank by that score among all rows of
    ``ranking`` (1 + the number of strictly higher scores, so ties share the best rank)."""
    column_rank = int(np.sum(ranking[column].to_numpy(dtype=float) > float(value))) + 1
    return f'<td class="num">{_format_score(value)}<br><small>({column_rank})</small></td>'


def _table_row(
    row: pd.Series,
    ranking: pd.DataFrame,
    score_columns: Sequence[str],
    id_column: str,
    previews: Mapping[Any, bytes | str],
    explanations: Mapping[Any, pd.DataFrame],
    flagged_ids: set[Any],
) -> str:
    """One ``<tr>``: rank, item id, preview, given and suggested label (red when they differ), the
    predicted probability of the suggested label, each score with its rank, and the explanation cell."""
    item = _plain(row[id_column]) if id_column in row.index else _plain(row.name)
    given = row.get("current_label", "")
    suggested = row.get("suggested_label", "")
    changed = ' class="changed"' if str(given) != str(suggested) else ""
    cells = [
        f'<td class="num">{int(row["rank"])}</td>',
        f"<td>{html.escape(str(item))}</td>",
        _preview_cell(previews.get(item)),
        f"<td>{html.escape(str(given))}</td>",
        f"<td{changed}>{html.escape(str(suggested))}</td>",
        f'<td class="num">{_format_score(row.get("predicted_probability", np.nan))}</td>',
    ]
    cells += [_score_cell(ranking, column, row[column]) for column in score_columns]
    cells.append(_explanation_cell(explanations.get(item), flagged_ids))
    return "<tr>" + "".join(cells) + "</tr>"


def _page_head(title: str) -> str:
    """``<!DOCTYPE html>`` through ``<body>``: the escaped title and the inline CSS (no external assets)."""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style></head><body>\n"
    )


def _summary_block(title: str, cards: Mapping[str, Any]) -> str:
    """The heading, the generation time (UTC, to the minute) and one card per key → value fact."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
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
    return f"<h2>Scores</h2>{figures_html}\n"


TABLE_NOTE = """\
<p class="note">Check these labels first. <span class="changed">Red</span> suggested labels differ from
the given label. Scores: higher = more suspicious; the small number is the item's rank by that score.
<b>self_influence</b> = g<sub>i</sub><sup>T</sup>H<sup>−1</sup>g<sub>i</sub>, how much the model had to bend
to fit this label (Koh &amp; Liang 2017); <b>loss</b> = −log p(given label). The last column lists the
training items that most <span class="sup">support</span> and most <span class="opp">oppose</span> the given
label: influence g<sub>j</sub><sup>T</sup>H<sup>−1</sup>g<sub>i</sub>; a flagged item supported mainly by
items that are themselves flagged (⚑) is a likely error.</p>
"""


def _table_block(header_cells: Sequence[str], rows_html: Sequence[str]) -> str:
    """The "Flagged items" section: how to read the table (``TABLE_NOTE``), then the table itself."""
    return (
        "<h2>Flagged items, most suspicious first</h2>\n"
        + TABLE_NOTE
        + f"<table><thead><tr>{''.join(f'<th>{cell}</th>' for cell in header_cells)}</tr></thead>\n"
        + f"<tbody>{''.join(rows_html)}</tbody></table>\n"
    )


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
) -> dict[str, Path]:
    """The report of one audit: previews from ``dataset``, explanations from ``scorer`` for the flagged items.

    ``dataset``: the :class:`relabel.dataset.LabeledDataset` that was ranked; ``scorer``: the fitted
    :class:`relabel.SuspicionScorer` (its rows in ``dataset.ids`` order); ``ranking``: as
    :func:`relabel.selection.ranking_table` returns it (``task_id`` column; when a boolean ``flagged`` column
    is present, the flagged rows are the ones reported, in rank order).
    """
    ids = np.asarray(dataset.ids)
    position_of = {_plain(item): position for position, item in enumerate(ids)}
    ordered = ranking.sort_values("rank", kind="stable")
    if "flagged" in ordered.columns and ordered["flagged"].any():
        ordered = ordered[ordered["flagged"].astype(bool)]
    flagged_ids = [_plain(item) for item in ordered["task_id"].head(min(n_flagged, max_rows))]
    explanations = explanations_for(scorer, ids, [position_of[item] for item in flagged_ids], top=explain_top)
    previews: dict[Any, bytes | str] = {}
    if dataset.kind in ("image", "text"):
        for item in flagged_ids:
            previews[item] = dataset.inputs[position_of[item]]
    source = dataset.source or {}
    return write_report(
        report_dir,
        ranking,
        method=method,
        n_flagged=n_flagged,
        id_column="task_id",
        title=title
        or f"relabel audit — {source.get('project_title') or source.get('project_id') or ''}".rstrip(" —"),
        summary=summary,
        previews=previews,
        explanations=explanations,
        max_rows=max_rows,
    )
