"""Tests of connectors.files: CSV / Parquet / JSONL -> LabeledDataset, and the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectors.files import load_file_dataset
from relabel.errors import InputError


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_csv_tabular_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,x1,x2,label\n30,1.5,2,cat\n10,0.5,-1,dog\n20,3,4,cat\n")
    dataset = load_file_dataset(path, label_column="label", id_column="id")
    assert dataset.kind == "tabular"
    assert dataset.ids.tolist() == [10, 20, 30]  # sorted by id
    assert dataset.labels.tolist() == ["dog", "cat", "cat"]
    assert dataset.classes == ["cat", "dog"]
    assert list(dataset.inputs.columns) == ["x1", "x2"]
    assert dataset.inputs.dtypes.tolist() == [np.float64, np.float64]
    np.testing.assert_array_equal(dataset.inputs.to_numpy(), [[0.5, -1.0], [3.0, 4.0], [1.5, 2.0]])
    assert dataset.inputs.index.tolist() == [10, 20, 30]
    assert dataset.provenance.index.tolist() == [10, 20, 30]
    assert set(dataset.provenance.columns) == {
        "annotation_id",
        "annotator",
        "updated_at",
        "n_annotations",
        "disagreement",
    }
    assert dataset.label_indices().tolist() == [1, 0, 0]
    assert dataset.unlabeled_ids == []


def test_feature_columns_selects_and_orders(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b,note,label\n1,2,hello,0\n3,4,bye,1\n")
    dataset = load_file_dataset(path, label_column="label", feature_columns=["b", "a"])
    assert list(dataset.inputs.columns) == ["b", "a"]
    assert dataset.ids.tolist() == [0, 1]
    assert dataset.classes == ["0", "1"] and dataset.labels.tolist() == ["0", "1"]


def test_parquet_and_jsonl_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["good food", "bad service"], "y": ["pos", "neg"], "key": ["b", "a"]})
    parquet = tmp_path / "items.parquet"
    frame.to_parquet(parquet)
    dataset = load_file_dataset(parquet, label_column="y", id_column="key", text_column="text")
    assert dataset.kind == "text"
    assert dataset.ids.tolist() == ["a", "b"]
    assert dataset.inputs == ["bad service", "good food"]
    assert dataset.labels.tolist() == ["neg", "pos"]

    jsonl = write_jsonl(tmp_path / "items.jsonl", frame.to_dict(orient="records"))
    from_jsonl = load_file_dataset(jsonl, label_column="y", text_column="text")
    assert from_jsonl.inputs == ["good food", "bad service"]
    assert from_jsonl.classes == ["neg", "pos"]


def test_numeric_classes_sorted_numerically(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,label\n1,10\n2,9\n3,2\n")
    assert load_file_dataset(path, label_column="label").classes == ["2", "9", "10"]


def test_unknown_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,label\n1,a\n")
    with pytest.raises(InputError, match=r"no column 'target'.*columns: x, label"):
        load_file_dataset(path, label_column="target")
    with pytest.raises(InputError, match="no column 'nope'"):
        load_file_dataset(path, label_column="label", feature_columns=["nope"])


def test_nan_cell_names_column_and_file_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,y,label\n1,2,a\n3,,b\n5,6,a\n")
    with pytest.raises(InputError, match=r"line 3, column 'y' is empty \(NaN\)"):
        load_file_dataset(path, label_column="label")


def test_non_numeric_cell_names_column_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,label\n1,a\n2,b\nthree,a\n")
    with pytest.raises(InputError, match=r"line 4, column 'x' is 'three', not a finite number"):
        load_file_dataset(path, label_column="label")


def test_jsonl_row_number_is_file_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"x": 1, "label": "a"}\n\n{"x": "bad", "label": "b"}\n')
    with pytest.raises(InputError, match=r"line 3, column 'x'"):
        load_file_dataset(path, label_column="label")


def test_missing_label_names_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,label\n1,a\n2,\n3,b\n")
    with pytest.raises(InputError, match=r"line 3 has no label in column 'label'"):
        load_file_dataset(path, label_column="label")


def test_duplicate_ids_and_unsupported_type(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,x,label\n1,1,a\n1,2,b\n")
    with pytest.raises(InputError, match=r"line 3 repeats id 1"):
        load_file_dataset(path, label_column="label", id_column="id")
    with pytest.raises(InputError, match=r"unsupported file type \.xlsx"):
        load_file_dataset(tmp_path / "rows.xlsx", label_column="label")
    with pytest.raises(InputError, match="no such file"):
        load_file_dataset(tmp_path / "missing.csv", label_column="label")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_jsonl_file_is_one_line_not_a_traceback(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match="holds no JSON records"):
        load_file_dataset(path, label_column="label")


def test_an_empty_csv_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="the file is empty"):
        load_file_dataset(path, label_column="label")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    if suffix == ".jsonl":
        text = '{"text": "ok", "label": "a"}\n{"text": "café", "label": "b"}\n'
    else:
        text = "id,text,label\n1,ok,a\n2,café,b\n".replace(",", "," if suffix == ".csv" else "\t")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(
        InputError, match=rf"line {2 if suffix == '.jsonl' else 3} is not UTF-8 text"
    ) as caught:
        load_file_dataset(path, label_column="label", text_column="text")
    assert "\n" not in str(caught.value)


def test_a_byte_order_mark_does_not_rename_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,x,label\n1,0.5,a\n2,0.7,b\n".encode())
    assert load_file_dataset(path, label_column="label", id_column="id").ids.tolist() == [1, 2]


def test_compare_on_a_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relabel.cli import main

    path = tmp_path / "latin1.csv"
    path.write_bytes("".join(f"{i},café {i},{'ab'[i % 2]}\n" for i in range(40)).encode("latin-1"))
    code = main(["compare", str(path), "--text-column", "text", "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not UTF-8" in err and not (tmp_path / "c").exists()
