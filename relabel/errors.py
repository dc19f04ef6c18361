"""User-facing errors.

Every failure a user can fix (bad input, a server that cannot be reached, a fit that did not converge)
is raised as a :class:`RelabelError` whose message is one line saying what went wrong and what to do.
The CLI prints that line and exits non-zero without a traceback; library callers catch the class.
"""

from __future__ import annotations


class RelabelError(Exception):
    """A problem the user can fix; ``str(error)`` is one line: what went wrong and what to do."""


class InputError(RelabelError, ValueError):
    """The data handed to relabel is unusable (NaN cell, unknown column, single class, ...)."""


class ConvergenceError(RelabelError, RuntimeError):
    """A fit or an iterative solver did not reach its tolerance; scores would be meaningless."""


class ConnectorError(RelabelError, RuntimeError):
    """A data source (Label Studio server, file) refused or could not be reached."""


class NotFoundError(ConnectorError):
    """The data source has no such object (e.g. no Label Studio project with that id)."""


class LockedError(RelabelError):
    """Another relabel run is writing the same project's review queue (or the same nightly state)."""


def plain_value(value: object) -> object:
    """``value`` as a plain Python value for a message: a NumPy scalar becomes the Python scalar it holds
    (``np.int64(301)`` → ``301``, ``np.float32(inf)`` → ``inf``), a NumPy array a list; lists, tuples and
    dicts element-wise."""
    if isinstance(value, (list, tuple)):
        return type(value)(plain_value(item) for item in value)
    if isinstance(value, dict):
        return {plain_value(key): plain_value(item) for key, item in value.items()}
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return plain_value(value.tolist())  # type: ignore[attr-defined]
    return value


def shown(value: object, limit: int = 60) -> str:
    """How a message shows one value a user gave: the ``repr`` of its plain Python value
    (:func:`plain_value`), cut to ``limit`` characters with "…", on one line."""
    text = " ".join(repr(plain_value(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
