"""Writing relabel's output files privately and safely.

Rankings, reports, state files and logs hold annotator e-mails and task text, so relabel creates its files
with mode 0600 and its folders with mode 0700 (folders that already exist keep their mode). A file is
written to a temporary name beside it (created 0600) and renamed over the target when complete, so a
failure never leaves half a file behind.

CSV files are made safe to open in a spreadsheet: a text cell (or a column name) beginning with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return would be run as a formula (CSV injection), so it is written with a
leading ``'``. Numbers, and text that reads as a plain number (``-1``, ``+2.5``), are written unchanged; a
cell holding a line break is quoted (lines end in CRLF), so it cannot start a row of its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from relabel.errors import InputError

FILE_MODE = 0o600
FOLDER_MODE = 0o700
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_writable_folder(folder: str | Path, what: str) -> None:
    """InputError (one line, naming ``what``, e.g. "--out") unless ``folder`` exists as a writable folder or
    can be created: its nearest existing ancestor is a folder we may write in. Creates nothing."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{what} {folder}: {probe} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{what} {folder}: cannot create the folder, {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder}: cannot create or write the folder, {probe} is not writable")


def private_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` and its missing parents with mode 0700 (existing ones are left as they are);
    InputError in one line when that is impossible. Returns the path."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=FOLDER_MODE)
        if not folder.is_dir():
            raise NotADirectoryError(20, "not a folder")
    except OSError as error:
        raise InputError(f"cannot create the {what} {folder}: {error.strerror or error}") from None
    return folder


@contextlib.contextmanager
def private_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (created with mode 0600) to write into; on leaving the block without
    an error it replaces ``path`` (mode 0600), otherwise it is removed (an OSError, e.g. a full disk, becomes
    a one-line InputError). The folder is created (0700)."""
    path = Path(path)
    private_folder(path.parent)
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(descriptor)  # mkstemp creates the file with mode 0600
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError):
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def write_private_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with mode 0600, atomically."""
    with private_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def append_private_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``, creating it with mode 0600 (its folder 0700)."""
    path = Path(path)
    private_folder(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _is_plain_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return not text[:1].isspace()


def spreadsheet_safe_text(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula; else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_plain_number(value):
        return "'" + value
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot start a spreadsheet formula (see the
    module docstring); numeric columns are untouched."""
    safe = frame.copy()
    for column in safe.columns:
        series = safe[column]
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            safe[column] = series.map(spreadsheet_safe_text).astype(series.dtype)
    safe.columns = [spreadsheet_safe_text(str(column)) for column in safe.columns]
    return safe


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """``frame`` (no index) as a spreadsheet-safe CSV file with mode 0600, written atomically. Lines end
    in CRLF (RFC 4180), so a cell holding a bare carriage return is quoted and cannot start a new row."""
    with private_file(path) as temporary:
        spreadsheet_safe(frame).to_csv(temporary, index=False, lineterminator="\r\n")
    return Path(path)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """``frame`` (no index) as a Parquet file with mode 0600, written atomically (values unchanged: Parquet
    is not opened by spreadsheets as formulas)."""
    with private_file(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return Path(path)
