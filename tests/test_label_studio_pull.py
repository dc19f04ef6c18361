"""LabelStudioConnector against a REAL Label Studio server (the session fixture ``label_studio``; no
mocks)."""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from connectors.label_studio import LabelStudioConnector, parse_labeling_config
from connectors.label_studio.pull import fetch_image
from relabel.errors import ConnectorError
from scripts.local_label_studio import LocalLabelStudio, find_free_port
from tests.label_studio_seeding import (
    annotate,
    choice_annotation,
    choice_result,
    choices_block,
    create_draft,
    create_project,
    export_tasks,
    image_classification_config,
    import_tasks,
    tabular_classification_config,
    text_classification_config,
    text_tasks,
    touch_annotation,
    upload_files,
)

CLASSES = ["positive", "negative", "neutral"]


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (10, 7)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def legacy(label_studio: LocalLabelStudio) -> LabelStudioConnector:
    return LabelStudioConnector(label_studio.url, label_studio.legacy_token)


@pytest.fixture(scope="module")
def text_project(label_studio: LocalLabelStudio) -> tuple[int, list[int]]:
    project_id = create_project(label_studio, text_classification_config(CLASSES), "text round trip")
    texts = ["great food", "awful service", "it was fine", "lovely staff", "cold soup"]
    labels = ["positive", "negative", "neutral", "positive", None]
    task_ids = import_tasks(label_studio, project_id, text_tasks(texts, labels))
    return project_id, task_ids


class RecordingImageServer:
    """A tiny HTTP server on another port (a foreign host) that serves one PNG and records request headers."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append({key.lower(): value for key, value in self.headers.items()})
                if self.path.startswith("/picture.png"):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(recorder.image)))
                    self.end_headers()
                    self.wfile.write(recorder.image)
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def foreign_server() -> Iterator[RecordingImageServer]:
    server = RecordingImageServer(png_bytes((0, 0, 255)))
    try:
        yield server
    finally:
        server.close()


# ----------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("method", ["export", "list"])
def test_text_round_trip(
    legacy: LabelStudioConnector, text_project: tuple[int, list[int]], method: str
) -> None:
    project_id, task_ids = text_project
    dataset = legacy.pull(project_id, method=method)
    assert dataset.kind == "text"
    assert dataset.classes == CLASSES
    assert dataset.ids.tolist() == task_ids[:4]
    assert dataset.inputs == ["great food", "awful service", "it was fine", "lovely staff"]
    assert dataset.labels.tolist() == ["positive", "negative", "neutral", "positive"]
    assert dataset.label_indices().tolist() == [0, 1, 2, 0]
    assert dataset.unlabeled_ids == [task_ids[4]]
    provenance = dataset.provenance
    assert provenance.index.tolist() == task_ids[:4]
    assert provenance["n_annotations"].tolist() == [1, 1, 1, 1]
    assert not provenance["disagreement"].any()
    assert (provenance["annotator"] == label_studio_admin(legacy)).all()
    exported = {task["id"]: task for task in export_tasks_via(legacy, project_id)}
    assert provenance["annotation_id"].tolist() == [exported[i]["annotations"][0]["id"] for i in task_ids[:4]]
    assert isinstance(provenance["updated_at"].dtype, pd.DatetimeTZDtype)
    assert dataset.source["project_id"] == project_id and dataset.source["method"] == method


def label_studio_admin(connector: LabelStudioConnector) -> str:
    return str(connector.request_json("GET", "/api/current-user/whoami")["email"])


def export_tasks_via(connector: LabelStudioConnector, project_id: int) -> list[dict]:
    return connector.client.export_tasks(project_id)


def test_export_and_list_give_identical_datasets(
    legacy: LabelStudioConnector, text_project: tuple[int, list[int]]
) -> None:
    project_id, _ = text_project
    by_export = legacy.pull(project_id, method="export")
    by_list = legacy.pull(project_id, method="list")
    np.testing.assert_array_equal(by_export.ids, by_list.ids)
    np.testing.assert_array_equal(by_export.labels, by_list.labels)
    assert by_export.inputs == by_list.inputs
    pd.testing.assert_frame_equal(by_export.provenance, by_list.provenance)


def test_list_pull_pages_through_more_than_a_thousand_tasks(label_studio: LocalLabelStudio) -> None:
    """A page of 1,000 made Label Studio on SQLite answer 500 ("Expression tree is too large"); the
    list pull must page through a project of 1,200 tasks and agree with the export."""
    project_id = create_project(label_studio, text_classification_config(CLASSES), "1,200 tasks")
    texts = [f"review number {i}" for i in range(1200)]
    labels = [CLASSES[i % 3] for i in range(1200)]
    import_tasks(label_studio, project_id, text_tasks(texts, labels))
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    by_list = connector.pull(project_id, method="list")
    by_export = connector.pull(project_id, method="export")
    assert len(by_list) == 1200
    np.testing.assert_array_equal(by_list.ids, by_export.ids)
    np.testing.assert_array_equal(by_list.labels, by_export.labels)


def test_several_annotators_skipped_draft_and_unlabeled(label_studio: LocalLabelStudio) -> None:
    project_id = create_project(label_studio, text_classification_config(CLASSES), "annotator mix")
    pos, neg = (choice_annotation(label, "label", "text") for label in ("positive", "negative"))
    skipped_positive = {**choice_annotation("positive", "label", "text"), "was_cancelled": True}
    tasks = [
        {"data": {"text": "majority"}, "annotations": [pos, neg, pos]},
        {"data": {"text": "tie"}, "annotations": [pos, neg]},
        {"data": {"text": "skip ignored"}, "annotations": [neg, skipped_positive]},
        {"data": {"text": "only skipped"}, "annotations": [choice_annotation("x", cancelled=True)]},
        {"data": {"text": "only a draft"}, "annotations": []},
        {"data": {"text": "nothing"}, "annotations": []},
    ]
    majority, tie, skip, only_skipped, only_draft, nothing = import_tasks(label_studio, project_id, tasks)
    create_draft(label_studio, only_draft, choice_result("positive"))
    create_draft(label_studio, skip, choice_result("positive"))  # a draft never outvotes a submitted label
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)

    dataset = connector.pull(project_id)
    labels = dict(zip(dataset.ids.tolist(), dataset.labels.tolist(), strict=True))
    assert labels == {majority: "positive", tie: "negative", skip: "negative"}
    assert sorted(dataset.unlabeled_ids) == sorted([only_skipped, only_draft, nothing])
    provenance = dataset.provenance
    assert provenance.loc[majority, "n_annotations"] == 3 and provenance.loc[majority, "disagreement"]
    assert provenance.loc[tie, "n_annotations"] == 2 and provenance.loc[tie, "disagreement"]
    assert provenance.loc[skip, "n_annotations"] == 1 and not provenance.loc[skip, "disagreement"]
    assert dataset.source["n_disagreements"] == 2

    # The tie goes to the most recently updated annotation: re-save the "positive" one and it wins.
    exported = {task["id"]: task for task in export_tasks(label_studio, project_id)}
    tie_annotations = exported[tie]["annotations"]
    positive_annotation = next(
        a for a in tie_annotations if a["result"][0]["value"]["choices"] == ["positive"]
    )
    touch_annotation(label_studio, positive_annotation["id"], choice_result("positive"))
    after = connector.pull(project_id)
    assert dict(zip(after.ids.tolist(), after.labels.tolist(), strict=True))[tie] == "positive"
    assert after.provenance.loc[tie, "annotation_id"] == positive_annotation["id"]


def test_label_not_in_config_names_task_and_label(label_studio: LocalLabelStudio) -> None:
    project_id = create_project(label_studio, text_classification_config(CLASSES), "unknown label")
    _, bad_task = import_tasks(label_studio, project_id, text_tasks(["a", "b"], ["positive", None]))
    annotate(label_studio, bad_task, choice_result("sarcastic"))
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    with pytest.raises(ConnectorError, match=rf"Task {bad_task} .*'sarcastic'.*positive, negative, neutral"):
        connector.pull(project_id)


# ----------------------------------------------------------------------------------------------- configs


def test_unsupported_configs_are_refused_with_their_tags(label_studio: LocalLabelStudio) -> None:
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    boxes = (
        '<View><Image name="photo" value="$image"/>'
        '<RectangleLabels name="boxes" toName="photo"><Label value="car"/></RectangleLabels></View>'
    )
    project_id = create_project(label_studio, boxes, "boxes")
    with pytest.raises(ConnectorError, match=r"Image 'photo', RectangleLabels 'boxes'") as error:
        connector.pull(project_id)
    assert "no <Choices>" in str(error.value)

    multiple = (
        '<View><Text name="text" value="$text"/>'
        + choices_block("topics", "text", ["a", "b"], choice_mode="multiple")
        + "</View>"
    )
    project_id = create_project(label_studio, multiple, "multi choice")
    with pytest.raises(ConnectorError, match=r'choice="multiple".*Text \'text\', Choices \'topics\''):
        connector.pull(project_id)

    spans = (
        '<View><Text name="text" value="$text"/><Labels name="ner" toName="text"><Label '
        'value="PER"/></Labels>' + choices_block("sentiment", "text", ["pos", "neg"]) + "</View>"
    )
    project_id = create_project(label_studio, spans, "spans and choices")
    import_tasks(
        label_studio,
        project_id,
        [{"data": {"text": "Ann"}, "annotations": [choice_annotation("neg", "sentiment", "text")]}],
    )
    with pytest.raises(ConnectorError, match=r"several control tags \(Labels 'ner', Choices 'sentiment'\)"):
        connector.pull(project_id)
    with pytest.raises(ConnectorError, match=r"'ner' is a <Labels>, not a <Choices>"):
        connector.pull(project_id, control="ner")
    dataset = connector.pull(project_id, control="sentiment")
    assert dataset.labels.tolist() == ["neg"] and dataset.classes == ["pos", "neg"]


def test_parse_labeling_config_details() -> None:
    config = parse_labeling_config(
        '<View><Header value="Pick"/><HyperText name="page" value="$html"/>'
        '<View><Choices name="kind" toName="page" choice="single-radio">'
        '<Choice value="Spam"/><Choice value="Ham" alias="ham"/></Choices></View></View>'
    )
    target = config.classification_target()
    assert target.kind == "text" and target.object_tag.value_key == "html"
    assert target.classes == ["Spam", "ham"]
    assert config.describe_tags() == "HyperText 'page', Choices 'kind'"
    with pytest.raises(ConnectorError, match="not valid XML"):
        parse_labeling_config("<View><Text")


# ----------------------------------------------------------------------------------------------- images


def test_image_round_trip_uploads_data_uri_and_foreign_url(
    label_studio: LocalLabelStudio, foreign_server: RecordingImageServer
) -> None:
    project_id = create_project(label_studio, image_classification_config(["red", "green", "blue"]), "images")
    red, green = png_bytes((255, 0, 0)), png_bytes((0, 255, 0), size=(5, 5))
    uploaded = upload_files(
        label_studio, project_id, [("red.png", red, "image/png"), ("green.png", green, "image/png")]
    )
    assert len(uploaded) == 2
    for task_id, label in zip(uploaded, ["red", "green"], strict=True):
        annotate(label_studio, task_id, choice_result(label, "label", "image"))
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes((0, 0, 250))).decode()
    ours, foreign = import_tasks(
        label_studio,
        project_id,
        [
            {"data": {"image": data_uri}, "annotations": [choice_annotation("blue", "label", "image")]},
            {
                "data": {"image": foreign_server.url + "/picture.png"},
                "annotations": [choice_annotation("blue", "label", "image")],
            },
        ],
    )
    exported = {task["id"]: task["data"]["image"] for task in export_tasks(label_studio, project_id)}
    assert exported[uploaded[0]].startswith("/data/upload/")  # stored as a Label Studio upload

    for token in (label_studio.legacy_token, label_studio.personal_access_token()):
        connector = LabelStudioConnector(label_studio.url, token)
        dataset = connector.pull(project_id)
        assert dataset.kind == "image"
        assert dataset.ids.tolist() == [*uploaded, ours, foreign]
        assert dataset.labels.tolist() == ["red", "green", "blue", "blue"]
        assert dataset.inputs[0] == red and dataset.inputs[1] == green
        assert dataset.inputs[2] == base64.b64decode(data_uri.split(",", 1)[1])
        assert dataset.inputs[3] == foreign_server.image
    assert len(foreign_server.requests) == 2
    for headers in foreign_server.requests:
        assert "authorization" not in headers
        assert label_studio.legacy_token not in str(headers)


def test_image_fetch_failure_names_the_task(
    label_studio: LocalLabelStudio, foreign_server: RecordingImageServer
) -> None:
    project_id = create_project(label_studio, image_classification_config(["a", "b"]), "broken image")
    (task_id,) = import_tasks(
        label_studio,
        project_id,
        [
            {
                "data": {"image": foreign_server.url + "/gone.png"},
                "annotations": [choice_annotation("a", "label", "image")],
            }
        ],
    )
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    dataset = connector.pull(project_id)  # one bad task is skipped and named, never a stop
    assert len(dataset) == 0 and list(dataset.skipped) == [task_id]
    assert re.fullmatch(rf"Task {task_id}: fetching its image .* answered HTTP 404", dataset.skipped[task_id])


def test_file_downloads_scope_the_token_to_the_label_studio_origin(
    label_studio: LocalLabelStudio, foreign_server: RecordingImageServer
) -> None:
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    status, _ = connector.client.download_file(foreign_server.url + "/picture.png", requests.Session())
    assert status == 200
    assert "authorization" not in foreign_server.requests[-1]
    whoami = label_studio.url + "/api/current-user/whoami"
    status, _ = connector.client.download_file(whoami, requests.Session())
    assert status == 200  # the same call on the Label Studio origin is authenticated


# ----------------------------------------------------------------------------------------------- tabular


def test_tabular_round_trip_nested_and_flat(label_studio: LocalLabelStudio) -> None:
    project_id = create_project(
        label_studio, tabular_classification_config(["low", "high"]), "tabular nested"
    )
    rows = [{"height": 1.5, "weight": 40}, {"height": 1.9, "weight": 95}, {"height": 1.7, "weight": 70}]
    task_ids = import_tasks(
        label_studio,
        project_id,
        [
            {"data": {"row": row}, "annotations": [choice_annotation(label, "label", "row")]}
            for row, label in zip(rows, ["low", "high", "low"], strict=True)
        ],
    )
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    dataset = connector.pull(project_id)
    assert dataset.kind == "tabular"
    assert list(dataset.inputs.columns) == ["height", "weight"]
    assert dataset.inputs.index.tolist() == task_ids
    np.testing.assert_array_equal(dataset.inputs.to_numpy(), [[1.5, 40.0], [1.9, 95.0], [1.7, 70.0]])
    assert dataset.inputs.dtypes.tolist() == [np.float64, np.float64]
    assert dataset.labels.tolist() == ["low", "high", "low"]

    # Flat task data: the Table shows "$name" (not a dict), so every numeric field becomes a column.
    flat_config = tabular_classification_config(["low", "high"], value_key="name")
    flat_project = create_project(label_studio, flat_config, "tabular flat")
    import_tasks(
        label_studio,
        flat_project,
        [
            {"data": {"name": f"p{i}", **row}, "annotations": [choice_annotation("low", "label", "row")]}
            for i, row in enumerate(rows)
        ],
    )
    flat = connector.pull(flat_project)
    assert list(flat.inputs.columns) == ["height", "weight"]
    np.testing.assert_array_equal(flat.inputs.to_numpy(), dataset.inputs.to_numpy())


def test_tabular_non_numeric_cell_names_task_and_column(label_studio: LocalLabelStudio) -> None:
    project_id = create_project(label_studio, tabular_classification_config(["low", "high"]), "tabular bad")
    good, bad = import_tasks(
        label_studio,
        project_id,
        [
            {"data": {"row": {"x": 1.0}}, "annotations": [choice_annotation("low", "label", "row")]},
            {"data": {"row": {"x": "tall"}}, "annotations": [choice_annotation("high", "label", "row")]},
        ],
    )
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    dataset = connector.pull(project_id)  # the bad task is skipped and named; the other one is kept
    assert dataset.ids.tolist() == [good] and dataset.inputs.index.tolist() == [good]
    assert list(dataset.skipped) == [bad] and dataset.skipped[bad].startswith(
        f"Task {bad}: column 'x' is 'tall'"
    )


# ----------------------------------------------------------------------------------------- auth and errors


def test_personal_access_token_and_legacy_token_both_work(
    label_studio: LocalLabelStudio, text_project: tuple[int, list[int]]
) -> None:
    project_id, _ = text_project
    pat = label_studio.personal_access_token()
    by_pat = LabelStudioConnector(label_studio.url, pat)
    by_legacy = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    assert by_pat.token_type == "refresh" and by_legacy.token_type == "legacy"
    first, second = by_pat.pull(project_id), by_legacy.pull(project_id, method="list")
    np.testing.assert_array_equal(first.ids, second.ids)
    np.testing.assert_array_equal(first.labels, second.labels)
    # The client (on the official SDK) works with both kinds of key.
    assert by_pat.client.get_project(project_id)["title"] == "text round trip"
    assert by_legacy.client.get_project(project_id)["title"] == "text round trip"


def test_environment_variables_are_the_defaults(
    label_studio: LocalLabelStudio, text_project: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.legacy_token)
    assert len(LabelStudioConnector().pull(text_project[0])) == 4
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    with pytest.raises(ConnectorError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioConnector()


def test_wrong_tokens_give_a_clear_401_error(
    label_studio: LocalLabelStudio, text_project: tuple[int, list[int]]
) -> None:
    project_id, _ = text_project
    pat = label_studio.personal_access_token()
    forged_pat = pat[:-6] + ("AAAAAA" if not pat.endswith("AAAAAA") else "BBBBBB")
    for bad_token in ("not-a-real-token-123", forged_pat):
        connector = LabelStudioConnector(label_studio.url, bad_token)
        with pytest.raises(ConnectorError) as error:
            connector.pull(project_id)
        message = str(error.value)
        assert f"Label Studio at {label_studio.url} rejected the API token (401)" in message
        assert "LABEL_STUDIO_API_KEY" in message
        assert bad_token not in message


def test_unreachable_server_and_unknown_project(label_studio: LocalLabelStudio) -> None:
    nowhere = f"http://127.0.0.1:{find_free_port()}"
    with pytest.raises(ConnectorError, match=rf"Could not reach Label Studio at {nowhere}"):
        LabelStudioConnector(nowhere, "some-token").pull(1)
    with pytest.raises(ConnectorError, match=rf"Could not reach Label Studio at {nowhere}"):
        LabelStudioConnector(nowhere, label_studio.personal_access_token()).pull(1)
    connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
    with pytest.raises(ConnectorError, match=r"has no project with id 987654"):
        connector.pull(987654)


def test_token_never_appears_in_output_logs_or_errors(
    label_studio: LocalLabelStudio,
    text_project: tuple[int, list[int]],
    foreign_server: RecordingImageServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    project_id, _ = text_project
    tokens = [label_studio.legacy_token, label_studio.personal_access_token()]
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            connector = LabelStudioConnector(label_studio.url, token)
            messages.append(repr(connector))
            connector.pull(project_id, progress=True)
            connector.pull(project_id, progress=True, method="list")
            for failing in (
                lambda c=connector: c.pull(987654),
                lambda c=connector: c.request_json("GET", "/api/projects/987654/no-such-endpoint"),
                lambda c=connector: c.request_json("GET", foreign_server.url + "/x"),
                lambda c=connector: fetch_image(c.client, foreign_server.url + "/gone.png", task_id=1),
            ):
                with pytest.raises(ConnectorError) as error:
                    failing()
                messages.append(str(error.value))
            messages.append(repr(LabelStudioConnector(f"http://127.0.0.1:{find_free_port()}", token)))
    captured = capsys.readouterr()
    everything = "\n".join([captured.out, captured.err, caplog.text, *messages])
    assert "export project" in captured.err  # the progress bars did write there
    for token in tokens:
        assert token not in everything
    server_log = label_studio.log_path.read_text(errors="replace")
    for token in tokens:
        assert token not in server_log
