"""File connector: a CSV, Parquet or JSON Lines file with a label column -> :class:`LabeledDataset`.

* ``text_column`` given -> kind ``"text"``: inputs are the strings of that column.
* otherwise -> kind ``"tabular"``: inputs are the numeric ``feature_columns`` (default: every column except
  the label and id columns) as a float64 DataFrame.

Item ids come from ``id_column`` when given (they must be unique), else they are the 0-based row positions.
Classes are the distinct labels sorted (numbers numerically, then as strings), labels are strings.
Row numbers in error messages are as a person sees them in the file: for CSV the line number (the header
is line 1, so the first data row is line 2); for JSON Lines the line number of the record; for Parquet the
1-based row number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.dataset import LabeledDataset
from relabel.errors import InputError

SUPPORTED_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
}


def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    suffix = path.suffix.lower()
    file_format = SUPPORTED_SUFFIXES.get(suffix)
    if file_format is None:
        raise InputError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv, .parquet or .jsonl"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if file_format in ("csv", "tsv"):
            frame = pd.read_csv(
                path, sep="," if file_format == "csv" else "\t", keep_default_na=True, encoding="utf-8-sig"
            )
        elif file_format == "parquet":
            frame = pd.read_parquet(path)
        else:
            records = []
            with path.open(encoding="utf-8-sig") as handle:
                for line_number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as error:
                        raise InputError(f"{path}: line {line_number} is not valid JSON ({error})") from None
                    if not isinstance(record, dict):
                        raise InputError(f"{path}: line {line_number} is not a JSON object")
                    record["__line__"] = line_number
                    records.append(record)
            if not records:
                raise InputError(f"{path}: the file holds no JSON records (it is empty)")
            frame = pd.DataFrame.from_records(records, columns=None if records else ["__line__"])
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(
            f"{path}: line {_first_line_not_utf8(path)} is not UTF-8 text; save the file as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty (no header, no rows)") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        detail = " ".join(str(error).split())
        raise InputError(f"{path}: could not read it as {file_format} ({detail})") from None
    return frame, file_format


def _first_line_not_utf8(path: Path) -> int | str:
    """The 1-based number of the first line of ``path`` that is not valid UTF-8 ("?" if none is found)."""
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return line_number
    return "?"


def read_table(path: str | Path) -> pd.DataFrame:
    """The file's rows and columns as read by :class:`FileConnector` (same formats, same InputErrors), in
    file order, without the line-number column the connector adds to JSON Lines records."""
    frame, file_format = _read_table(Path(path))
    return frame.drop(columns="__line__", errors="ignore") if file_format == "jsonl" else frame


def _row_numbers(frame: pd.DataFrame, file_format: str) -> np.ndarray:
    """How a person finds each row in the file (see the module docstring)."""
    if file_format == "jsonl":
        return frame["__line__"].to_numpy(dtype=np.int64)
    if file_format in ("csv", "tsv"):
        return np.arange(len(frame), dtype=np.int64) + 2
    return np.arange(len(frame), dtype=np.int64) + 1


def _row_word(file_format: str) -> str:
    return "line" if file_format in ("csv", "tsv", "jsonl") else "row"


@dataclass
class FileConnector:
    """Load a labeled file; see the module docstring for the rules. ``load()`` returns the dataset."""

    path: Path
    label_column: str
    id_column: str | None = None
    feature_columns: Sequence[str] | None = None
    text_column: str | None = None

    def load(self) -> LabeledDataset:
        """Read the file and return its items as a :class:`LabeledDataset` (raises InputError if unusable)."""
        path = Path(self.path)
        frame, file_format = _read_table(path)
        rows = _row_numbers(frame, file_format)
        where = _row_word(file_format)
        data_columns = [column for column in frame.columns if column != "__line__"]
        _require(path, data_columns, self.label_column, "label")
        if self.id_column is not None:
            _require(path, data_columns, self.id_column, "id")
        if self.text_column is not None:
            _require(path, data_columns, self.text_column, "text")
        if len(frame) == 0:
            raise InputError(f"{path}: the file holds no rows")

        classes, labels = self._labels(frame, rows, where, path)
        ids = self._ids(frame, rows, where, path)
        inputs, kind = self._inputs(frame, data_columns, ids, rows, where, path)
        order = np.argsort(ids, kind="stable")
        if not np.array_equal(order, np.arange(len(ids))):
            ids = ids[order]
            labels = labels[order]
            inputs = inputs.iloc[order] if isinstance(inputs, pd.DataFrame) else [inputs[i] for i in order]
        return LabeledDataset(
            ids=ids,
            inputs=inputs,
            kind=kind,  # type: ignore[arg-type]
            labels=labels,
            classes=classes,
            provenance=_file_provenance(ids),
            unlabeled_ids=[],
            source={
                "type": "file",
                "path": str(path),
                "format": file_format,
                "label_column": self.label_column,
                "id_column": self.id_column,
                "text_column": self.text_column,
            },
        )

    def _labels(
        self, frame: pd.DataFrame, rows: np.ndarray, where: str, path: Path
    ) -> tuple[list[str], np.ndarray]:
        """(classes, labels): the distinct labels sorted (numbers numerically first, then text) and each
        row's label, both as text (object array, file order); InputError naming the first unlabeled row."""
        labels_raw = frame[self.label_column]
        missing = labels_raw.isna() | labels_raw.astype(str).str.strip().eq("")
        if missing.any():
            first = int(np.flatnonzero(missing.to_numpy())[0])
            raise InputError(
                f"{path}: {where} {rows[first]} has no label in column {self.label_column!r} "
                f"({int(missing.sum())} rows lack one); label every row or drop the unlabeled ones"
            )
        label_values = labels_raw.tolist()
        classes_sorted = sorted(
            set(label_values), key=lambda value: (not _is_number(value), _sort_key(value))
        )
        classes = [_label_text(value) for value in classes_sorted]
        return classes, np.array([_label_text(value) for value in label_values], dtype=object)

    def _ids(self, frame: pd.DataFrame, rows: np.ndarray, where: str, path: Path) -> np.ndarray:
        """Item ids in file order: the ``id_column`` values (present and unique, else InputError naming the
        first offending row), or the 0-based row positions (int64) without an id column."""
        if self.id_column is None:
            return np.arange(len(frame), dtype=np.int64)
        id_series = frame[self.id_column]
        if id_series.isna().any():
            first = int(np.flatnonzero(id_series.isna().to_numpy())[0])
            raise InputError(f"{path}: {where} {rows[first]} has no id in column {self.id_column!r}")
        duplicated = id_series.duplicated(keep="first")
        if duplicated.any():
            first = int(np.flatnonzero(duplicated.to_numpy())[0])
            raise InputError(
                f"{path}: {where} {rows[first]} repeats id {id_series.tolist()[first]!r} of column "
                f"{self.id_column!r}; ids must be unique"
            )
        return id_series.to_numpy()

    def _inputs(
        self,
        frame: pd.DataFrame,
        data_columns: Sequence[str],
        ids: np.ndarray,
        rows: np.ndarray,
        where: str,
        path: Path,
    ) -> tuple[list[str] | pd.DataFrame, str]:
        """(inputs, kind) in file order: the ``text_column`` strings (kind "text"), or the feature columns as
        a float64 DataFrame indexed by ``ids`` (kind "tabular"); InputError naming an empty or bad cell."""
        if self.text_column is not None:
            texts = frame[self.text_column]
            empty = texts.isna()
            if empty.any():
                first = int(np.flatnonzero(empty.to_numpy())[0])
                raise InputError(f"{path}: {where} {rows[first]} has no text in column {self.text_column!r}")
            return [str(value) for value in texts.tolist()], "text"
        excluded = {self.label_column, self.id_column}
        columns = (
            list(self.feature_columns)
            if self.feature_columns is not None
            else [column for column in data_columns if column not in excluded]
        )
        for column in columns:
            _require(path, data_columns, column, "features")
        if not columns:
            raise InputError(f"{path}: no feature columns besides the label; name them with feature_columns")
        inputs = _numeric_frame(frame, columns, rows, where, path)
        inputs.index = pd.Index(ids, name="id")
        return inputs, "tabular"


def _require(path: Path, data_columns: Sequence[str], column: str, role: str) -> None:
    """InputError naming the file's columns when ``column`` (wanted for ``role``) is not among them."""
    if column not in data_columns:
        raise InputError(
            f"{path}: no column {column!r} for the {role} (columns: {', '.join(map(str, data_columns))})"
        )


def _file_provenance(ids: np.ndarray) -> pd.DataFrame:
    """Provenance for items read from a file, indexed by ``ids``: no annotation id, annotator or time
    (NA/""/NaT), one annotation each and no disagreement (a file holds a single label per item)."""
    return pd.DataFrame(
        {
            "annotation_id": pd.array([pd.NA] * len(ids), dtype="Int64"),
            "annotator": [""] * len(ids),
            "updated_at": pd.to_datetime([pd.NaT] * len(ids), utc=True),
            "n_annotations": np.ones(len(ids), dtype=np.int64),
            "disagreement": np.zeros(len(ids), dtype=bool),
        },
        index=pd.Index(ids, name="id"),
    )


def load_file_dataset(
    path: str | Path,
    label_column: str,
    id_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    text_column: str | None = None,
) -> LabeledDataset:
    """Load a CSV/TSV/Parquet/JSONL file with a label column as a :class:`LabeledDataset` (see module doc)."""
    return FileConnector(Path(path), label_column, id_column, feature_columns, text_column).load()


def _numeric_frame(
    frame: pd.DataFrame, columns: Sequence[str], rows: np.ndarray, where: str, path: Path
) -> pd.DataFrame:
    """The feature columns as float64; InputError naming column and row for a missing or non-numeric cell."""
    result = {}
    for column in columns:
        series = frame[column]
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            value = series.iloc[first]
            problem = "is empty (NaN)" if pd.isna(value) else f"is {value!r}, not a finite number"
            raise InputError(
                f"{path}: {where} {rows[first]}, column {column!r} {problem}; tabular features must be "
                "numbers "
                f"({int(bad.sum())} bad cells in that column)"
            )
        result[str(column)] = numeric.to_numpy(dtype=np.float64)
    return pd.DataFrame(result)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _sort_key(value: object) -> object:
    return float(value) if _is_number(value) else str(value)  # type: ignore[arg-type]


def _label_text(value: object) -> str:
    """A label as text; integral floats (``1.0`` from a CSV column with gaps) become ``"1"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
