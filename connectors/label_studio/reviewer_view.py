"""What a reviewer sees in relabel's review project: its labeling config (the item, a compact reason block,
the Choices), the reason block itself (HTML), the readable Data Manager columns and tab, and the project's
instructions.

The review project's labeling config is relabel's own (the user's project keeps its config untouched): the
source config with, right after its opening ``<View>``, a ``<Style>`` and one inline ``HyperText`` tag showing
the task's ``relabel_reasons`` field. The block is one line of verdict (rank, tier, current → suggested label
and the model's probability of it) and two rows of training items: the strongest supporters of the current
label (influence g_jᵀ H⁻¹ g_i > 0, :mod:`relabel.explanations`) and its strongest opposers (< 0), each a
thumbnail (images) or a one-line snippet (text), its label, ⚑ when it is flagged too, and a link to its task
in the source project. It is kept small (one line per row, thumbnails 40 px) so that it, the item and the
Choices fit in a 1366×768 window.

Label Studio names a Data Manager column after its task-data key, so the review tasks carry, beside relabel's
machine-readable ``relabel_*`` fields, a few fields whose keys read as column titles (``DISPLAY_COLUMNS``:
keys with a space, which no labeling config can reference as ``$key``, so they can never clash with the
item's own fields); relabel's tab in the review project shows those and hides the ``relabel_*`` ones and
Label Studio's bookkeeping columns, sorted by rank.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from connectors.label_studio.config import ClassificationTarget
from relabel.dataset import FlaggedItem
from relabel.errors import InputError

REASONS_TAG_NAME = "relabel_reasons"
# Label Studio 1.23 draws an <Image> up to ``calc(100vh - 194px)`` tall; the reason block takes ≈ 140 px
# more, so the review config lets images take that much less, keeping the Choices in the window.
IMAGE_MAX_HEIGHT = "calc(100vh - 340px)"
REVIEW_TAB_TITLE = "review queue"
SNIPPET_CHARACTERS = 90
THUMBNAIL_PIXELS = 40
# task-data key (= Data Manager column title) → the relabel field it shows
DISPLAY_COLUMNS = {
    "relabel rank": "relabel_rank",
    "relabel tier": "relabel_tier",
    "current label": "relabel_current",
    "suggested label": "relabel_suggested",
    "p(suggested)": "relabel_probability",
}
# Label Studio 1.23 column ids the review tab hides (bookkeeping a reviewer does not need).
HIDDEN_REVIEW_COLUMNS = (
    "inner_id",
    "completed_at",
    "cancelled_annotations",
    "total_predictions",
    "annotators",
    "annotations_results",
    "annotations_ids",
    "predictions_score",
    "predictions_model_versions",
    "predictions_results",
    "file_upload",
    "storage_filename",
    "created_at",
    "updated_at",
    "updated_by",
    "avg_lead_time",
    "draft_exists",
)
REASONS_CSS = f"""
.relabel-reasons {{ font: 13px/1.35 sans-serif; color: #222; background: #f6f7fb; border: 1px solid #dfe3ee;
  border-radius: 6px; padding: 6px 8px; margin: 0 0 8px 0; }}
.relabel-reasons .rr-head {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.relabel-reasons .rr-row {{ display: flex; align-items: center; gap: 6px; margin-top: 4px; overflow: hidden;
  white-space: nowrap; }}
.relabel-reasons .rr-role {{ flex: 0 0 auto; font-weight: 600; min-width: 9.5em; }}
.relabel-reasons .rr-item {{ display: inline-flex; align-items: center; gap: 3px; flex: 0 1 auto;
  min-width: 0; overflow: hidden; text-overflow: ellipsis; border: 1px solid #dfe3ee; border-radius: 4px;
  padding: 1px 4px; background: #fff; color: inherit; text-decoration: none; }}
.relabel-reasons .rr-item img {{ width: {THUMBNAIL_PIXELS}px; height: {THUMBNAIL_PIXELS}px;
  object-fit: contain; image-rendering: pixelated; }}
.relabel-reasons .rr-text {{ overflow: hidden; text-overflow: ellipsis; max-width: 22em; color: #555; }}
.relabel-reasons .rr-label {{ font-weight: 600; }}
"""


# ---------------------------------------------------------------------------------------------- config


def review_label_config(source_config: str) -> str:
    """The review project's labeling config: ``source_config`` with a ``<Style>`` and the inline
    ``HyperText`` reason block inserted right after its opening root ``<View …>`` (so the reasons come
    first, above the item and the Choices), and every ``<Image>`` without a ``maxHeight`` given
    ``IMAGE_MAX_HEIGHT``. A config that already has the block is returned unchanged."""
    if f'name="{REASONS_TAG_NAME}"' in source_config:
        return source_config
    opening = re.search(r"<View\b[^>]*?(/?)>", source_config)
    if opening is None or opening.group(1) == "/" or source_config.rfind("</View>") < opening.end():
        raise InputError(
            "The source labeling config has no <View>…</View> root; cannot build the review project"
        )
    block = (
        f"\n  <Style>{REASONS_CSS}</Style>"
        f'\n  <HyperText name="{REASONS_TAG_NAME}" value="${REASONS_TAG_NAME}" inline="true"/>'
    )
    config = source_config[: opening.end()] + block + source_config[opening.end() :]
    return re.sub(
        r"<Image\b(?![^>]*\bmaxHeight=)",
        f'<Image maxHeight="{IMAGE_MAX_HEIGHT}"',
        config,
        flags=re.IGNORECASE,
    )


def instructions(source_project_id: int) -> str:
    """The review project's ``expert_instruction`` (HTML, shown by Label Studio before labeling)."""
    return (
        f"<p><b>relabel review queue</b> for project {int(source_project_id)}: the items whose label "
        "relabel's model finds most suspicious (self-influence), most suspicious first. Each task shows the "
        "item, why it was flagged (the training items that most support and most oppose its current label, "
        "each linked to its task) and the model's suggested label, pre-selected.</p>"
        "<p><b>Submit</b> records the label selected: keep the suggestion to accept it, or pick the correct "
        f"label (the current one if it was right). <code>relabel sync</code> copies each decision to project "
        f"{int(source_project_id)} as a new annotation; nothing there is edited or deleted.</p>"
        "<p><b>Skip</b> records no decision: the item stays unreviewed and comes back later in your queue."
        "</p>"
    )


# ---------------------------------------------------------------------------------------------- tasks


def display_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The readable Data Manager columns of one review task, from its relabel fields (``DISPLAY_COLUMNS``)."""
    shown = {key: meta.get(field) for key, field in DISPLAY_COLUMNS.items()}
    if shown["current label"] is None:
        shown["current label"] = "(none)"
    return shown


def reasons_html(
    item: FlaggedItem,
    current: str | None,
    target: ClassificationTarget,
    evidence_data: Mapping[int, Mapping[str, Any]],
    flagged: Collection[int],
    task_url: Callable[[int], str],
) -> str:
    """The reason block of one review task (HTML for the inline ``HyperText`` tag).

    ``evidence_data``: source task id → task data, for the items in ``item.evidence``; ``flagged``: the
    flagged task ids (marked ⚑); ``task_url``: source task id → its page in Label Studio. Every value from
    task data is HTML-escaped; an image is shown only from an http(s), root-relative or ``data:image/`` URL.
    """
    shown = "(none)" if current is None else current
    head = (
        f"<b>#{int(item.rank)}</b>"
        + ("" if not item.tier else f" · {html.escape(item.tier)}")
        + f" · current label <b>{html.escape(shown)}</b>"
        + f" → model suggests <b>{html.escape(item.suggested)}</b>"
        + ("" if item.probability is None else f" (p {item.probability:.2f})")
        + f" · suspicion {item.score:.2f}"
    )
    rows = [f'<div class="rr-head">{head}</div>']
    for role, title in (("supports", "Supports"), ("opposes", "Opposes")):
        evidence = [e for e in item.evidence if e.role == role]
        if not evidence:
            continue
        cells = "".join(
            _evidence_cell(
                e.item_id, e.label, target, evidence_data.get(int(e.item_id), {}), flagged, task_url
            )
            for e in evidence
        )
        rows.append(
            f'<div class="rr-row rr-{role}"><span class="rr-role">{title} “{html.escape(shown)}”:</span>'
            f"{cells}</div>"
        )
    return f'<div class="relabel-reasons">{"".join(rows)}</div>'


def _evidence_cell(
    task_id: Any,
    label: str,
    target: ClassificationTarget,
    data: Mapping[str, Any],
    flagged: Collection[int],
    task_url: Callable[[int], str],
) -> str:
    value = data.get(target.object_tag.value_key or "")
    if target.kind == "image" and isinstance(value, str) and _displayable_image(value):
        preview = f'<img src="{html.escape(value, quote=True)}" alt="task {int(task_id)}">'
    else:
        preview = f'<span class="rr-text">{html.escape(_snippet(value))}</span>' if value is not None else ""
    mark = " ⚑" if int(task_id) in flagged else ""
    return (
        f'<a class="rr-item" href="{html.escape(task_url(int(task_id)), quote=True)}" target="_blank" '
        f'rel="noopener" title="task {int(task_id)}, labeled {html.escape(label)}{mark}">{preview}'
        f'<span class="rr-label">{html.escape(label)}{mark}</span></a>'
    )


def _displayable_image(url: str) -> bool:
    return url.startswith(("http://", "https://", "data:image/")) or (
        url.startswith("/") and not url.startswith("//")
    )


def _snippet(value: Any) -> str:
    """One line of an item: text with tags and runs of whitespace removed, cut to ``SNIPPET_CHARACTERS``;
    a table row as its first fields."""
    if isinstance(value, Mapping):
        text = ", ".join(f"{key}: {field}" for key, field in list(value.items())[:4])
    else:
        text = html.unescape(re.sub(r"<[^>]+>", " ", str(value)))
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARACTERS else text[: SNIPPET_CHARACTERS - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------- tab


def review_tab_data(hidden_data_keys: Sequence[str]) -> dict[str, Any]:
    """relabel's Data Manager tab in the review project: every task, sorted by rank (numeric), the readable
    columns shown, ``hidden_data_keys`` (relabel's machine-readable fields) and the bookkeeping columns
    hidden."""
    hidden = [f"tasks:{name}" for name in HIDDEN_REVIEW_COLUMNS]
    hidden += [f"tasks:data.{key}" for key in hidden_data_keys]
    return {
        "title": REVIEW_TAB_TITLE,
        "ordering": ["tasks:data.relabel rank"],
        "columnsDisplayType": {"tasks:data.relabel rank": "Number", "tasks:data.p(suggested)": "Number"},
        "columnsWidth": {f"tasks:data.{key}": 135 for key in DISPLAY_COLUMNS},
        "hiddenColumns": {"explore": hidden, "labeling": hidden},
    }
