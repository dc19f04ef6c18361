"""What a reviewer sees, as data: the reason block of a review task (supporters and opposers with previews,
labels and links), the review project's labeling config, instructions and Data Manager tab, and the view
queue's ordering by suspicion (the project's model version), against the real Label Studio server."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from connectors.label_studio import LabelStudioConnector
from connectors.label_studio.config import parse_labeling_config
from connectors.label_studio.queue_plan import RELABEL_FIELD_KEYS
from connectors.label_studio.reviewer_view import (
    DISPLAY_COLUMNS,
    REASONS_TAG_NAME,
    REVIEW_TAB_TITLE,
    instructions,
    reasons_html,
    review_label_config,
)
from relabel.dataset import Evidence, FlaggedItem
from relabel.explanations import strongest_evidence, with_evidence
from tests.label_studio_seeding import (
    create_project,
    export_tasks,
    get_json,
    image_classification_config,
    import_tasks,
    text_classification_config,
    text_tasks,
)

CLASSES = ["pos", "neg"]


def _target(config: str) -> Any:
    return parse_labeling_config(config).classification_target()


def _evidence(supporters: list[tuple[int, str]], opposers: list[tuple[int, str]]) -> tuple[Evidence, ...]:
    return tuple(
        Evidence("supports", task, label, 1.0 / (n + 1)) for n, (task, label) in enumerate(supporters)
    ) + tuple(Evidence("opposes", task, label, -1.0 / (n + 1)) for n, (task, label) in enumerate(opposers))


def test_strongest_evidence_takes_the_largest_supporters_then_the_most_negative_opposers() -> None:
    table = pd.DataFrame(
        {
            "role": ["supports", "supports", "supports", "opposes", "opposes"],
            "row": [0, 1, 2, 3, 4],
            "id": [10, 11, 12, 13, 14],
            "influence": [0.5, 2.0, 1.0, -0.1, -3.0],
            "label": ["a", "b", "a", "b", "b"],
        }
    )
    evidence = strongest_evidence(table, per_role=2)
    assert [(e.role, e.item_id, e.label, e.influence) for e in evidence] == [
        ("supports", 11, "b", 2.0),
        ("supports", 12, "a", 1.0),
        ("opposes", 14, "b", -3.0),
        ("opposes", 13, "b", -0.1),
    ]
    items = [FlaggedItem(7, 1, 1.0, "b", "a"), FlaggedItem(8, 2, 0.5, "a", "b")]
    filled = with_evidence(items, {7: table}, per_role=1)
    assert [e.item_id for e in filled[0].evidence] == [11, 14] and filled[1].evidence == ()


def test_review_config_puts_the_reason_block_first_and_keeps_the_source_tags() -> None:
    source = image_classification_config(CLASSES)
    config = review_label_config(source)
    assert config.index(f'name="{REASONS_TAG_NAME}"') < config.index("<Image") < config.index("<Choices")
    assert f'<HyperText name="{REASONS_TAG_NAME}" value="${REASONS_TAG_NAME}" inline="true"/>' in config
    assert review_label_config(config) == config  # built once
    parsed = parse_labeling_config(config)
    assert parsed.classification_target().classes == CLASSES  # the reviewer still labels with the Choices


def test_reason_block_shows_previews_labels_flags_and_links_and_escapes_task_data() -> None:
    target = _target(text_classification_config(CLASSES))
    item = FlaggedItem(
        5, 3, 0.87, "neg", "pos", 0.91, "likely error", _evidence([(6, "pos"), (7, "pos")], [(8, "neg")])
    )
    data = {
        6: {"text": "<b>great</b> &amp; fine " + "x" * 200},
        7: {"text": "ok"},
        8: {"text": "<script>x</script>"},
    }
    block = reasons_html(
        item, "pos", target, data, {5, 6}, lambda task: f"http://ls/projects/1/data?task={task}"
    )
    assert "<b>#3</b> · likely error · current label <b>pos</b> → model suggests <b>neg</b> (p 0.91)" in block
    assert "suspicion 0.87" in block
    supports, opposes = block.split('class="rr-row rr-supports"')[1].split('class="rr-row rr-opposes"')
    assert [int(t) for t in re.findall(r"task=(\d+)", supports)] == [6, 7]
    assert [int(t) for t in re.findall(r"task=(\d+)", opposes)] == [8]
    assert "pos ⚑" in supports and supports.count("⚑") == 2  # task 6 is flagged too (label and title)
    assert "<script>" not in block and "&lt;script&gt;" not in block  # tags dropped from the snippet
    assert "great &amp; fine" in block  # text, unescaped once, escaped again for HTML
    snippet = re.search(r'<span class="rr-text">(great[^<]*)</span>', block).group(1)
    assert len(snippet.replace("&amp;", "&")) == 90 and snippet.endswith("…")


def test_reason_block_shows_thumbnails_only_from_urls_a_browser_may_load() -> None:
    target = _target(image_classification_config(CLASSES))
    item = FlaggedItem(5, 1, 1.0, "neg", "pos", 0.6, None, _evidence([(6, "pos"), (7, "pos")], [(8, "neg")]))
    data = {
        6: {"image": "/data/upload/1/six.png"},
        7: {"image": "javascript:alert(1)"},
        8: {"image": "https://example.org/a.png?x=1&y=2"},
    }
    block = reasons_html(item, "pos", target, data, set(), lambda task: f"/projects/1/data?task={task}")
    assert re.findall(r'<img src="([^"]+)"', block) == [
        "/data/upload/1/six.png",
        "https://example.org/a.png?x=1&amp;y=2",
    ]
    assert (
        "javascript:" not in block.replace("javascript:alert(1)", "") and '<img src="javascript' not in block
    )
    assert "⚑" not in block


def _seed(server: Any, n_tasks: int = 12) -> tuple[int, list[int]]:
    project_id = create_project(server, text_classification_config(CLASSES), title="reviewer view")
    labels = [CLASSES[i % 2] for i in range(n_tasks)]
    task_ids = import_tasks(
        server, project_id, text_tasks([f"text number {i}" for i in range(n_tasks)], labels)
    )
    return project_id, sorted(task_ids)


def _items(task_ids: list[int], top: int) -> list[FlaggedItem]:
    return [
        FlaggedItem(
            task_ids[i],
            i + 1,
            1.0 - i / 10,
            CLASSES[(i + 1) % 2],
            CLASSES[i % 2],
            0.9 - i / 100,
            "review",
            _evidence([(task_ids[-1], CLASSES[i % 2])], [(task_ids[-2], CLASSES[(i + 1) % 2])]),
        )
        for i in range(top)
    ]


def test_review_tasks_carry_reasons_readable_columns_and_the_project_its_instructions(label_studio) -> None:
    project_id, task_ids = _seed(label_studio)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    result = connector.push(project_id, _items(task_ids, 4), mode="project")
    review_id = int(result.review_project_id)

    review = get_json(label_studio, f"/api/projects/{review_id}/")
    assert review["show_instruction"] is True
    assert review["expert_instruction"] == instructions(project_id)
    assert "Submit" in review["expert_instruction"] and "Skip" in review["expert_instruction"]
    assert f'name="{REASONS_TAG_NAME}"' in review["label_config"]
    tasks = sorted(export_tasks(label_studio, review_id), key=lambda task: task["data"]["relabel_rank"])
    for task, item in zip(tasks, _items(task_ids, 4), strict=True):
        data = task["data"]
        assert data["relabel rank"] == item.rank and data["relabel tier"] == "review"
        assert data["current label"] == item.current and data["suggested label"] == item.suggested
        assert data["p(suggested)"] == pytest.approx(item.probability)
        links = [
            int(t) for t in re.findall(r"/projects/(\d+)/data\?task=(\d+)", data[REASONS_TAG_NAME]) for t in t
        ]
        assert links == [project_id, task_ids[-1], project_id, task_ids[-2]]
        assert f"text number {len(task_ids) - 1}" in data[REASONS_TAG_NAME]  # the supporter's snippet

    (tab,) = [v for v in get_json(label_studio, "/api/dm/views/", project=review_id)]
    assert tab["data"]["title"] == REVIEW_TAB_TITLE
    assert tab["data"]["ordering"] == ["tasks:data.relabel rank"]
    hidden = set(tab["data"]["hiddenColumns"]["explore"])
    assert {f"tasks:data.{key}" for key in RELABEL_FIELD_KEYS} <= hidden
    assert not {f"tasks:data.{key}" for key in DISPLAY_COLUMNS} & hidden
    ordered = get_json(label_studio, "/api/tasks/", view=tab["id"], project=review_id, page_size=50)["tasks"]
    assert [task["data"]["relabel rank"] for task in ordered] == [1, 2, 3, 4]

    again = connector.push(project_id, _items(task_ids, 4), mode="project")
    assert again.review_tasks_created == 0
    assert [v["id"] for v in get_json(label_studio, "/api/dm/views/", project=review_id)] == [tab["id"]]


def test_a_review_project_made_before_the_reason_block_gets_it_on_the_next_audit(label_studio) -> None:
    project_id, task_ids = _seed(label_studio)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    first = connector.push(project_id, _items(task_ids, 2), mode="project")
    review_id = int(first.review_project_id)
    old_config = text_classification_config(CLASSES).replace(
        "</View>", '<Text name="relabel_note" value="$relabel_note"/></View>'
    )
    connector.client.update_project(
        review_id, label_config=old_config, expert_instruction="", show_instruction=False
    )

    connector.push(project_id, _items(task_ids, 2), mode="project")

    review = get_json(label_studio, f"/api/projects/{review_id}/")
    assert f'name="{REASONS_TAG_NAME}"' in review["label_config"] and review["show_instruction"] is True
    assert review["expert_instruction"] == instructions(project_id)


def test_view_queue_sets_an_unset_model_version_so_the_tab_sorts_by_suspicion(label_studio) -> None:
    project_id, task_ids = _seed(label_studio)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    assert get_json(label_studio, f"/api/projects/{project_id}/")["model_version"] == ""
    items = _items(task_ids, 5)
    shuffled = [items[i] for i in (3, 0, 4, 2, 1)]  # the order of the push does not matter
    result = connector.push(project_id, shuffled, mode="view")

    assert result.model_version_note == ""
    assert get_json(label_studio, f"/api/projects/{project_id}/")["model_version"] == "relabel-self_influence"
    listed = get_json(label_studio, "/api/tasks/", view=result.view_id, project=project_id, page_size=50)[
        "tasks"
    ]
    assert [task["id"] for task in listed] == [item.task_id for item in items]  # most suspicious first
    assert [task["predictions_score"] for task in listed] == pytest.approx([item.score for item in items])

    connector.undo(project_id)
    assert get_json(label_studio, f"/api/projects/{project_id}/")["model_version"] == ""


def test_view_queue_leaves_a_model_version_the_user_chose_and_says_so(label_studio) -> None:
    project_id, task_ids = _seed(label_studio)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    connector.client.import_predictions(
        project_id, [{"task": task_ids[0], "model_version": "team-model", "score": 0.4, "result": []}]
    )
    connector.client.update_project(project_id, model_version="team-model")

    result = connector.push(project_id, _items(task_ids, 3), mode="view")

    assert get_json(label_studio, f"/api/projects/{project_id}/")["model_version"] == "team-model"
    assert "'team-model'" in result.model_version_note and "left as it is" in result.model_version_note
    assert result.model_version_note in result.summary().splitlines()
    connector.undo(project_id)
    assert get_json(label_studio, f"/api/projects/{project_id}/")["model_version"] == "team-model"
