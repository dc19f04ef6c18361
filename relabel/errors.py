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
