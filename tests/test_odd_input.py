"""Issue 23, part 5: odd input never ends in a traceback or a leak. One test per named case; the seeded
fuzzing of every input path is ``tests/test_fuzz_input.py``.

* files (``rank``, ``compare``, ``explain``): lists, structs, dates, mixed types, cut or foreign files;
* report folders (``explain --from``): a cut ``audit.json``, a file that is not Parquet, a damaged column;
* Label Studio (``audit``, against the real server): one task with a malformed image URL is skipped and
  named, the others are audited;
* ``--url`` / ``$LABEL_STUDIO_URL`` carrying credentials or a token: refused before any request, not echoed;
* messages show plain values ("task 301", "inf"), never NumPy reprs.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import random
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from relabel.errors import InputError, plain_value, shown
from tests.odd_values import OTHER_TOKEN, TOKEN, base_frame, check_outcome, run_cli, write_report_folder


def one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    check_outcome(code, out, err, " / ".join(fragments))
    assert code == 2, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


@pytest.fixture
def frame() -> pd.DataFrame:
    return base_frame(random.Random(0))


def rank(path: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        ["rank", str(path), "--id-column", "id", "--out", str(tmp_path / "out.csv"), "--quiet", *extra],
        capsys,
    )


# ------------------------------------------------------------------------------------------------- files
def test_a_parquet_column_holding_lists_is_named(frame, tmp_path, capsys) -> None:
    frame["f2"] = [[1.0, 2.0]] * len(frame)
    path = tmp_path / "lists.parquet"
    frame.drop(columns="text").to_parquet(path)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, f"{path}: row 1, column 'f2' holds a list ([1.0, 2.0])", "numbers")


def test_a_struct_label_column_is_named(frame, tmp_path, capsys) -> None:
    frame["label"] = [{"name": label, "score": 1} for label in frame["label"]]
    path = tmp_path / "struct.parquet"
    frame.drop(columns="text").to_parquet(path)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "row 1, column 'label' holds a struct", "one label (text or a number)")


def test_dates_used_as_features_are_refused_with_what_to_do(frame, tmp_path, capsys) -> None:
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="D")
    path = tmp_path / "dates.parquet"
    frame.drop(columns="text").to_parquet(path)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "column 'when' holds dates or durations", "convert them to numbers")
    # JSON Lines carries dates as text: refused as not a number, naming line and value
    lines = [json.dumps({"id": i, "f1": float(i % 3), "label": "ab"[i % 2]}) for i in range(8)]
    lines[3] = json.dumps({"id": 3, "f1": datetime.date(2024, 1, 2).isoformat(), "label": "b"})
    path = tmp_path / "dates.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "line 4, column 'f1' is '2024-01-02', not a finite number")


def test_a_label_column_mixing_numbers_and_text_is_one_class_per_text(tmp_path) -> None:
    from connectors.files import load_file_dataset

    records = [
        {"x": float(i), "label": value} for i, value in enumerate([1, "1", 1.0, "two", 2, "two", True])
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    dataset = load_file_dataset(path, "label")
    assert dataset.classes == ["1", "2", "True", "two"]  # numbers first, by value; then text
    assert dataset.labels.tolist() == ["1", "1", "1", "two", "2", "two", "True"]
    assert dataset.label_indices().tolist() == [0, 0, 0, 3, 1, 3, 2]


def test_an_id_column_mixing_numbers_and_text_is_refused(tmp_path, capsys) -> None:
    records = [{"id": i if i != 4 else "four", "x": float(i % 3), "label": "ab"[i % 2]} for i in range(8)]
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "column 'id' mixes numbers and text (line 1: 0, line 5: 'four')")


@pytest.mark.parametrize("damage", ["cut", "csv text", "random bytes", "empty"])
def test_a_cut_or_foreign_parquet_file_is_named(frame, tmp_path, capsys, damage: str) -> None:
    path = tmp_path / "data.parquet"
    frame.drop(columns="text").to_parquet(path)
    content = path.read_bytes()
    damaged = {
        "cut": content[: len(content) // 2],
        "csv text": frame.to_csv(index=False).encode(),
        "random bytes": bytes(random.Random(1).randrange(256) for _ in range(3000)),
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, f"{path}: could not read it as parquet")


def test_a_column_name_used_twice_is_named(frame, tmp_path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays(
        [pa.array(frame["f1"]), pa.array(frame["f2"]), pa.array(frame["label"])], names=["f", "f", "label"]
    )
    path = tmp_path / "twice.parquet"
    pq.write_table(table, path)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, str(path), "'f'")


def test_infinite_and_huge_cells_are_shown_as_plain_values(frame, tmp_path, capsys) -> None:
    frame = frame.drop(columns="text")
    frame["f1"] = frame["f1"].astype(object)
    frame.loc[4, "f1"] = "inf"
    path = tmp_path / "inf.csv"
    frame.to_csv(path, index=False)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "line 6, column 'f1' is inf, not a finite number")
    records = [{"id": i, "x": float(i % 3), "label": "ab"[i % 2]} for i in range(8)]
    records[2]["x"] = 10**30  # beyond int64: a finite number, read as a float
    records[5]["x"] = [1, 2]
    path = tmp_path / "huge.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "line 6, column 'x' holds a list ([1, 2])")


def test_a_class_with_one_item_names_the_item_by_its_plain_id(frame, tmp_path, capsys) -> None:
    frame = frame.drop(columns="text")
    frame.loc[7, "label"] = "owl"
    path = tmp_path / "owl.parquet"
    frame.to_parquet(path)
    code, out, err = rank(path, tmp_path, capsys)
    one_line_error(code, out, err, "class 'owl' has a single item (id 107)")


def test_messages_show_plain_python_values() -> None:
    assert shown(np.int64(301)) == "301" and shown(np.float32("inf")) == "inf"
    assert shown([np.int64(1), np.str_("a")]) == "[1, 'a']" and plain_value(np.bool_(True)) is True
    assert shown("x" * 100, 10) == "'xxxxxxxx…" and shown({"a": [1, 2]}) == "{'a': [1, 2]}"
    from relabel.scorer import check_class_counts

    with pytest.raises(InputError) as caught:
        check_class_counts(np.array([0, 0, 1]), ["a", "b"], item_ids=np.array([299, 300, 301]))
    assert "(id 301)" in str(caught.value) and "np." not in str(caught.value)


# ------------------------------------------------------------------------------------------ report folders
@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> tuple[Path, list[int]]:
    folder = tmp_path_factory.mktemp("odd-report")
    return folder, write_report_folder(folder)


def damaged_copy(report_folder, tmp_path: Path) -> Path:
    copy = tmp_path / "report"
    shutil.copytree(report_folder[0], copy)
    return copy


def explain_from(folder: Path, item: int, capsys) -> tuple[int, str, str]:
    return run_cli(["explain", "--from", str(folder), "--item", str(item)], capsys)


def test_explain_from_an_intact_folder_still_answers(report_folder, capsys) -> None:
    code, out, err = explain_from(report_folder[0], report_folder[1][0], capsys)
    assert code == 0 and out.startswith(f"item {report_folder[1][0]}: given label"), err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("cut", "audit.json is damaged (not complete JSON: cut off"),
        ("[1, 2]", "audit.json is damaged (a JSON list, not an object)"),
        ('{"format": "one"}', "audit.json is damaged (format 'one' is not a whole number)"),
        ('{"format": 1, "task_url": "{project}/{task_id}"}', "task_url '{project}/{task_id}' is not a link"),
        ('{"format": 99}', "audit.json was written by a newer relabel (format 99)"),
    ],
)
def test_a_cut_or_foreign_audit_json_is_named(report_folder, tmp_path, capsys, content, expected) -> None:
    folder = damaged_copy(report_folder, tmp_path)
    original = (folder / "audit.json").read_text(encoding="utf-8")
    (folder / "audit.json").write_text(original[: len(original) // 2] if content == "cut" else content)
    code, out, err = explain_from(folder, report_folder[1][0], capsys)
    one_line_error(code, out, err, expected)


@pytest.mark.parametrize("name", ["explain.parquet", "ranking.parquet"])
def test_a_file_that_is_not_parquet_in_the_folder_is_named(report_folder, tmp_path, capsys, name) -> None:
    folder = damaged_copy(report_folder, tmp_path)
    (folder / name).write_text("item,role\n1,supports\n", encoding="utf-8")
    code, out, err = explain_from(folder, report_folder[1][0], capsys)
    one_line_error(code, out, err, f"{folder / name} is damaged or not a Parquet file")


@pytest.mark.parametrize(
    ("name", "column", "values", "expected"),
    [
        ("explain.parquet", "influence", "text", "column 'influence' holds 'x', not a number"),
        ("explain.parquet", "id", "lists", "column 'id' holds [1, 2], not one value"),
        ("ranking.parquet", "rank", "text", "column 'rank' holds 'x', not a number"),
        ("ranking.parquet", "predicted_probability", None, "no column predicted_probability"),
        ("ranking.parquet", "current_label", "structs", "column 'current_label' holds {'a': 1}"),
    ],
)
def test_a_damaged_column_in_the_folder_is_named(
    report_folder, tmp_path, capsys, name, column, values, expected
) -> None:
    folder = damaged_copy(report_folder, tmp_path)
    table = pd.read_parquet(folder / name)
    if values is None:
        table = table.drop(columns=column)
    else:
        table[column] = [{"text": "x", "lists": [1, 2], "structs": {"a": 1}}[values]] * len(table)
    table.to_parquet(folder / name)
    code, out, err = explain_from(folder, report_folder[1][0], capsys)
    one_line_error(code, out, err, f"{folder / name} is damaged", expected)


# ------------------------------------------------------------------------------------------ --url
class ConnectionCounter:
    """A TCP listener that counts the connections made to it (a request relabel should never send)."""

    def __init__(self) -> None:
        self.connections = 0
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[ConnectionCounter]:
    counter = ConnectionCounter()
    try:
        yield counter
    finally:
        counter.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:{port}/?token={other}", "holds a query string or fragment"),
        ("http://127.0.0.1:{port}?access_token=abc&x=1", "holds a query string or fragment"),
        ("http://127.0.0.1:{port}/#{other}", "holds a query string or fragment"),
        ("http://127.0.0.1:{port}/?", "holds a query string or fragment"),
        ("http://{other}@127.0.0.1:{port}", "holds a user name or password"),
        ("http://user:{other}@127.0.0.1:{port}/?q=1", "holds a query string or fragment"),
        ("http://127.0.0.1:{port}/?token={token}", "holds the API token"),
        ("http://127.0.0.1:{port}/{token}", "holds the API token"),
        ("http://127.0.0.1:99999", "not a valid URL (the port is not a number in 1-65535)"),
        ("http://127.0.0.1:8o80", "not a valid URL (the port is not a number in 1-65535)"),
        ("http://[::1:{port}", "not a valid URL (a broken IPv6 address"),
        ("ftp://127.0.0.1:{port}", "is not an http(s) URL"),
        ("http://", "names no host"),
        ("http://127.0.0.1:{port}/ x", "holds a space or a control character"),
    ],
)
def test_a_url_with_credentials_or_a_bad_form_is_refused_before_any_request(
    listener, token_file, capsys, monkeypatch, url: str, expected: str
) -> None:
    url = url.format(port=listener.port, token=TOKEN, other=OTHER_TOKEN)
    for where in ("--url", "$LABEL_STUDIO_URL"):
        if where == "--url":
            args = ["audit", "--url", url, "--project", "1", "--api-key-file", str(token_file)]
        else:
            monkeypatch.setenv("LABEL_STUDIO_URL", url)
            args = ["sync", "--project", "1", "--api-key-file", str(token_file)]
        code, out, err = run_cli(args, capsys)
        one_line_error(code, out, err, f"{where} ", expected)
        check_outcome(code, out, err, url, secrets=(TOKEN, OTHER_TOKEN))
        assert "abc" not in err and "?q=1" not in err
    assert listener.connections == 0


def test_a_nightly_config_url_with_a_token_is_refused_before_any_project_runs(tmp_path, capsys) -> None:
    from relabel.nightly import EXIT_BAD_CONFIG, run_nightly

    config = tmp_path / "audit.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[projects]]\nname = "p"\nproject = 1\n'
        f'url = "http://127.0.0.1:9/?token={TOKEN}"\n'
    )
    stream = io.StringIO()
    assert run_nightly(config, stream=stream) == EXIT_BAD_CONFIG
    line = stream.getvalue()
    assert line.count("\n") == 1 and "query string or fragment" in line and TOKEN[:8] not in line


# ------------------------------------------------------------------------------------------ Label Studio
def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(content: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(content).decode()


MALFORMED_IMAGES = {
    "bad port": "http://127.0.0.1:99999/a.png",
    "port not a number": "http://127.0.0.1:80a/a.png",
    "broken IPv6": "http://[::1/a.png",
    "unknown scheme": "gopher://127.0.0.1/a.png",
    "data URI that is not an image": data_uri(b"%PDF-1.4 not an image", "application/pdf"),
    "cut PNG": data_uri(png((9, 9, 9))[:40]),
    "signed URL that is not there": "/data/upload/none/missing.png?X-Amz-Signature=" + TOKEN,
}


def test_one_malformed_image_url_skips_that_task_and_audits_the_rest(label_studio, tmp_path, capsys) -> None:
    from tests.label_studio_seeding import choice_annotation, create_project, image_classification_config
    from tests.label_studio_seeding import import_tasks as seed

    project_id = create_project(label_studio, image_classification_config(["dark", "light"]), "odd images")
    good = [
        {
            "data": {"image": data_uri(png((v, v, v)))},
            "annotations": [choice_annotation("dark" if v < 128 else "light", "label", "image")],
        }
        for v in (10, 30, 50, 70, 200, 220, 240, 250)
    ]
    bad = [
        {"data": {"image": url}, "annotations": [choice_annotation("dark", "label", "image")]}
        for url in MALFORMED_IMAGES.values()
    ]
    task_ids = seed(label_studio, project_id, good + bad)
    bad_ids = dict(zip(task_ids[len(good) :], MALFORMED_IMAGES, strict=True))
    key = tmp_path / "token"
    key.write_text(label_studio.legacy_token)
    key.chmod(0o600)
    base = ["audit", "--url", label_studio.url, "--project", str(project_id), "--api-key-file", str(key)]
    code, out, err = run_cli([*base, "--dry-run", "--json", "--top", "2"], capsys)
    check_outcome(code, out, err, "audit --json", secrets=(label_studio.legacy_token, TOKEN))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_labeled"] == len(good) and summary["n_skipped"] == len(bad)
    reasons = {entry["task_id"]: entry["reason"] for entry in summary["skipped_tasks"]}
    assert sorted(reasons) == sorted(bad_ids)
    for task_id, case in bad_ids.items():
        assert reasons[task_id].startswith(f"Task {task_id}: "), (case, reasons[task_id])
    by_case = {case: reasons[task_id] for task_id, case in bad_ids.items()}
    assert "the port is not a number in 1-65535" in by_case["bad port"]
    assert "a broken IPv6 address" in by_case["broken IPv6"]
    assert "scheme 'gopher' is not supported" in by_case["unknown scheme"]
    assert "is not an image file Pillow can read" in by_case["data URI that is not an image"]
    assert "is not an image file Pillow can read" in by_case["cut PNG"]
    assert (
        "answered HTTP " in by_case["signed URL that is not there"]
        and "?…" in by_case["signed URL that is not there"]
    )

    code, out, err = run_cli([*base, "--dry-run", "--top", "2"], capsys)
    check_outcome(code, out, err, "audit text", secrets=(label_studio.legacy_token, TOKEN))
    assert f"{len(good)} labeled and ranked (0 without a usable label left out, {len(bad)} skipped" in out
    assert f"skipped {len(bad)} labeled tasks whose input could not be read" in out
    first = min(bad_ids)
    assert f"  Task {first}: " in out


# ------------------------------------------------------------------------------------------ other inputs
def test_odd_values_in_a_nightly_config_are_one_line_errors(tmp_path) -> None:
    """Every key of the nightly TOML set, one at a time, to values of each TOML type: a config relabel
    accepts or an InputError (one line), never another exception."""
    import tomllib

    from relabel.errors import RelabelError
    from relabel.nightly import NightlyConfig
    from relabel.settings import AuditSettings

    values = ["", "x", "{name}/..", -1, 0, 3, 1.5, float("nan"), True, [], [1, "a"], {}, {"a": 1}]
    values += [tomllib.loads("d = 1979-05-27T07:32:00Z")["d"], tomllib.loads("t = 07:32:00")["t"]]
    project_keys = [
        "name",
        "url",
        "project",
        "report_dir",
        "api_key_file",
        "api_key_env",
        *AuditSettings.keys(),
    ]
    valid = {"state_dir": str(tmp_path), "projects": [{"url": "http://127.0.0.1:9", "project": 1}]}
    cases = [("state_dir", value) for value in values] + [("log_file", value) for value in values]
    cases += [("defaults", value) for value in values] + [("projects", value) for value in values]
    cases += [(f"projects.{key}", value) for key in project_keys for value in values]
    accepted = 0
    for key, value in cases:
        raw = json.loads(json.dumps(valid))
        if key.startswith("projects."):
            raw["projects"][0][key.split(".", 1)[1]] = value
        else:
            raw[key] = value
        try:
            NightlyConfig.from_dict(raw)
            accepted += 1
        except RelabelError as error:
            assert "\n" not in str(error) and "np." not in str(error), (key, value, str(error))
    assert 0 < accepted < len(cases)


def test_annotation_results_of_another_shape_count_as_no_label() -> None:
    from connectors.label_studio.annotations import majority_label
    from connectors.label_studio.config import parse_labeling_config
    from tests.label_studio_seeding import text_classification_config

    target = parse_labeling_config(text_classification_config(["a", "b"])).classification_target(None)
    odd_results = [
        "a",
        {"choices": ["a"]},
        [None, 3, "x"],
        [{"from_name": "label", "value": "a"}],
        [{"from_name": "label", "value": {"choices": "a"}}],
        [{"from_name": "label", "value": {"choices": [["a"]]}}],
        [{"from_name": "label", "value": {"choices": [{"a": 1}]}}],
    ]
    for result in odd_results:
        task = {"id": 1, "annotations": [{"id": 5, "result": result, "updated_at": "2024-01-01"}]}
        assert majority_label(task, target) is None, result
        assert target.label_of(result) is None, result
    good = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["b"]}}]
    task = {"id": 1, "annotations": [{"id": 6, "result": [None, *good], "updated_at": "2024-01-01"}]}
    assert majority_label(task, target).label == "b" and target.label_of(good) == "b"


def test_sync_report_folder_with_a_damaged_audit_json_is_one_line(report_folder, tmp_path) -> None:
    from relabel.report import check_sync_report

    folder = damaged_copy(report_folder, tmp_path)
    for content in ("[1, 2]", '{"source": "x"}', '{"source": {"project_id": "four"}}', "{"):
        (folder / "audit.json").write_text(content)
        with pytest.raises(InputError) as caught:
            check_sync_report(folder, 4)
        assert "\n" not in str(caught.value) and "audit.json" in str(caught.value)
