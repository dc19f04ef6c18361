"""File connector: a CSV, Parquet or JSON Lines file with a label column -> :class:`LabeledDataset`.

* ``text_column`` given -> kind ``"text"``: inputs are the strings of that column.
* otherwise -> kind ``"tabular"``: inputs are the numeric ``feature_columns`` (default: every column except
  the label and id columns) as a float64 DataFrame.

Item ids come from ``id_column`` when given (they must be unique), else they are the 0-based row positions.
Classes are the distinct labels sorted (numbers numerically, then as strings), labels are strings.
What a cell may hold: the label, id and text columns one value each (text or a number; a label column may
mix them: labels are compared as text, so ``1``, ``1.0`` and ``"1"`` are one class), and the id column
numbers only or text only; feature columns numbers (booleans count as 0/1, numeric text such as ``"2.5"``
is read as a number). Refused with one line naming file, column and row: a cell holding a list, a struct
(dict), binary data, or (in a feature column) a date, time or duration (convert it to a number first), and
a file that is not what its suffix says (a cut or foreign Parquet file, binary data in a CSV), a column
name used twice, an id column mixing numbers and text.

Row numbers in error messages are as a person sees them in the file: for CSV the line number (the header
is line 1, so the first data row is line 2); for JSON Lines the line number of the record; for Parquet the
1-based row number.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.dataset import LabeledDataset
from relabel.errors import InputError, shown

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
                path,
                sep="," if file_format == "csv" else "\t",
                keep_default_na=True,
                encoding="utf-8-sig",
                low_memory=False,  # one dtype per column, no DtypeWarning on stderr
            )
        elif file_format == "parquet":
            frame = _read_parquet(path)
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
    except (OSError, ValueError, TypeError, NotImplementedError, pd.errors.ParserError) as error:
        detail = " ".join(str(error).split())[:200]
        raise InputError(f"{path}: could not read it as {file_format} ({detail})") from None
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise InputError(f"{path}: column {shown(repeated[0])} appears twice; give every column its own name")
    return frame, file_format


def _read_parquet(path: Path) -> pd.DataFrame:
    """``pd.read_parquet``, with pyarrow's own errors (a cut file, a file that is not Parquet, a type pandas
    cannot hold) raised as ValueError."""
    import pyarrow
    import pyarrow.parquet

    try:
        names = pyarrow.parquet.read_schema(path).names
        repeated = [name for position, name in enumerate(names) if name in names[:position]]
        if repeated:
            raise InputError(
                f"{path}: column {shown(repeated[0])} appears twice; give every column its own name"
            )
        return pd.read_parquet(path)
    except pyarrow.ArrowException as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


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

    def chunk(self, frame: pd.DataFrame, rows: np.ndarray, where: str, first_row: int) -> FileChunk:
        """One block of rows of the file (see :func:`iter_labeled_chunks`), checked as :meth:`load` does."""
        path = Path(self.path)
        data_columns = list(frame.columns)
        _require(path, data_columns, self.label_column, "label")
        if self.id_column is not None:
            _require(path, data_columns, self.id_column, "id")
        _, labels = self._labels(frame, rows, where, path)
        if self.id_column is None:
            ids = np.arange(first_row, first_row + len(frame), dtype=np.int64)
        else:
            ids = self._ids(frame, rows, where, path)
        excluded = {self.label_column, self.id_column}
        columns = list(self.feature_columns or [c for c in data_columns if c not in excluded])
        for column in columns:
            _require(path, data_columns, column, "features")
        if not columns:
            raise InputError(f"{path}: no feature columns besides the label; name them with feature_columns")
        features = _numeric_frame(frame, columns, rows, where, path).to_numpy(dtype=np.float64)
        return FileChunk(labels=labels, ids=ids, features=features)

    def _labels(
        self, frame: pd.DataFrame, rows: np.ndarray, where: str, path: Path
    ) -> tuple[list[str], np.ndarray]:
        """(classes, labels): the distinct labels sorted (numbers numerically first, then text) and each
        row's label, both as text (object array, file order); InputError naming the first unlabeled row."""
        labels_raw = frame[self.label_column]
        _check_cells(path, labels_raw, rows, where, "label")
        missing = labels_raw.isna() | labels_raw.astype(str).str.strip().eq("")
        if missing.any():
            first = int(np.flatnonzero(missing.to_numpy())[0])
            raise InputError(
                f"{path}: {where} {rows[first]} has no label in column {self.label_column!r} "
                f"({int(missing.sum())} rows lack one); label every row or drop the unlabeled ones"
            )
        texts: dict[str, tuple[bool, object]] = {}
        label_texts = []
        for value in labels_raw.tolist():
            text = _label_text(value)
            label_texts.append(text)
            key = (not _is_number(value), _sort_key(value))
            texts[text] = min(texts.get(text, key), key, key=_comparable)
        classes = sorted(texts, key=lambda text: _comparable(texts[text]))
        return classes, np.array(label_texts, dtype=object)

    def _ids(self, frame: pd.DataFrame, rows: np.ndarray, where: str, path: Path) -> np.ndarray:
        """Item ids in file order: the ``id_column`` values (present and unique, else InputError naming the
        first offending row), or the 0-based row positions (int64) without an id column."""
        if self.id_column is None:
            return np.arange(len(frame), dtype=np.int64)
        id_series = frame[self.id_column]
        _check_cells(path, id_series, rows, where, "id")
        if id_series.isna().any():
            first = int(np.flatnonzero(id_series.isna().to_numpy())[0])
            raise InputError(f"{path}: {where} {rows[first]} has no id in column {self.id_column!r}")
        duplicated = id_series.duplicated(keep="first")
        if duplicated.any():
            first = int(np.flatnonzero(duplicated.to_numpy())[0])
            raise InputError(
                f"{path}: {where} {rows[first]} repeats id {shown(id_series.tolist()[first])} of column "
                f"{self.id_column!r}; ids must be unique"
            )
        numeric = [_is_number(value) for value in id_series.tolist()]
        if any(numeric) and not all(numeric):
            first = numeric.index(not numeric[0])
            raise InputError(
                f"{path}: column {self.id_column!r} mixes numbers and text ({where} {rows[0]}: "
                f"{shown(id_series.iloc[0])}, {where} {rows[first]}: {shown(id_series.iloc[first])}); "
                "ids must be all numbers or all text"
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
            _check_cells(path, texts, rows, where, "text")
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
        _check_cells(path, series, rows, where, "features")
        numeric = _to_float(series)
        bad = np.isnan(numeric) | ~np.isfinite(numeric)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            value = series.iloc[first]
            problem = "is empty (NaN)" if _is_missing(value) else f"is {shown(value)}, not a finite number"
            raise InputError(
                f"{path}: {where} {rows[first]}, column {column!r} {problem}; tabular features must be "
                "numbers "
                f"({int(bad.sum())} bad cells in that column)"
            )
        result[str(column)] = numeric
    return pd.DataFrame(result)


def _to_float(series: pd.Series) -> np.ndarray:
    """A feature column as float64 (NaN where a cell is not a number): numbers and booleans as they are,
    numeric text parsed; element-wise when pandas cannot convert the column as a whole."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64)
    try:
        numeric = pd.to_numeric(series, errors="coerce")
        return np.asarray(numeric.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return np.array([_one_float(value) for value in series.tolist()], dtype=np.float64)


def _one_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


_CELL_EXPECTED = {
    "label": "one label (text or a number)",
    "id": "one id (text or a number)",
    "text": "text",
    "features": "numbers",
}


def _cell_problem(value: object, role: str) -> str | None:
    """What makes ``value`` unreadable as one cell of a ``role`` column ("a list", …), or None if it is
    readable."""
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return "a list"
    if isinstance(value, dict):
        return "a struct (a dict of fields)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary data"
    if role == "features" and isinstance(
        value, (datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64)
    ):
        return "a date, time or duration"
    return None


def _check_cells(path: Path, series: pd.Series, rows: np.ndarray, where: str, role: str) -> None:
    """InputError naming file, column and the first row whose cell cannot be read for ``role`` (a list, a
    struct, binary data, or a date/time used as a feature; see the module docstring)."""
    column = series.name
    dtype = series.dtype
    if role == "features" and (
        pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)
    ):
        raise InputError(
            f"{path}: column {shown(column)} holds dates or durations ({dtype}), not numbers; convert them "
            "to numbers first (e.g. days since a fixed date), or leave the column out with --feature-columns"
        )
    if not pd.api.types.is_object_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return
    for position, value in enumerate(series.tolist()):
        problem = _cell_problem(value, role)
        if problem is not None:
            raise InputError(
                f"{path}: {where} {rows[position]}, column {shown(column)} holds {problem} "
                f"({shown(value, 40)}); a {role} cell must hold {_CELL_EXPECTED[role]}"
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _sort_key(value: object) -> object:
    return float(value) if _is_number(value) else _label_text(value)  # type: ignore[arg-type]


def _comparable(key: tuple[bool, object]) -> tuple[bool, float, str]:
    """A class's sort key as one comparable tuple: numbers first, by value (NaN last), then text."""
    is_text, value = key
    if is_text:
        return True, 0.0, str(value)
    number = float(value)  # type: ignore[arg-type]
    return False, number if number == number else float("inf"), ""


def _label_text(value: object) -> str:
    """A label as text; integral floats (``1.0`` from a CSV column with gaps) become ``"1"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


@dataclass
class FileChunk:
    """One block of consecutive rows read by :func:`iter_labeled_chunks`: each row's label (text), id (the
    ``id_column`` value, else the 0-based row position) and features (float64, rows × columns)."""

    labels: np.ndarray
    ids: np.ndarray
    features: np.ndarray


def iter_labeled_chunks(
    path: str | Path,
    label_column: str,
    id_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    chunk_rows: int = 65_536,
) -> Iterator[FileChunk]:
    """A CSV/TSV/Parquet file's rows ``chunk_rows`` at a time (Parquet: record batches; CSV: pandas' chunked
    reader), with the same checks and one-line InputErrors as :class:`FileConnector` per row (a missing
    label or id, a non-numeric feature cell); id uniqueness across chunks is the caller's to check. Memory:
    one chunk. JSON Lines is refused (it is read whole)."""
    path = Path(path)
    file_format = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if file_format not in ("csv", "tsv", "parquet"):
        suffix = path.suffix or "(none)"
        raise InputError(f"{path}: streaming reads .csv, .tsv or .parquet files; got {suffix}")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    connector = FileConnector(path, label_column, id_column, feature_columns)
    first_row = 0
    try:
        for frame in _raw_chunks(path, file_format, chunk_rows):
            rows = _row_numbers(frame, file_format) + first_row
            yield connector.chunk(frame, rows, _row_word(file_format), first_row)
            first_row += len(frame)
    except UnicodeDecodeError:
        raise InputError(
            f"{path}: line {_first_line_not_utf8(path)} is not UTF-8 text; save the file as UTF-8"
        ) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        detail = " ".join(str(error).split())
        raise InputError(f"{path}: could not read it as {file_format} ({detail})") from None
    if first_row == 0:
        raise InputError(f"{path}: the file holds no rows")


def _raw_chunks(path: Path, file_format: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if file_format == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    separator = "," if file_format == "csv" else "\t"
    with pd.read_csv(path, sep=separator, chunksize=chunk_rows, encoding="utf-8-sig") as reader:
        yield from reader


def sorted_class_texts(labels: set[str]) -> list[str]:
    """Label texts in the connector's class order: numbers numerically first, then the rest as text."""

    def key(text: str) -> tuple[bool, float | str]:
        try:
            return (False, float(text))
        except ValueError:
            return (True, text)

    return sorted(labels, key=key)
