"""Change detection for the nightly run: did anything in a project change since relabel last looked?

Label Studio bumps a task's ``updated_at`` whenever one of its annotations or predictions is saved. The
watermark is the server's own clock (the HTTP ``Date`` of a request), so clock skew between machines does not
matter. relabel writes predictions (which bump ``updated_at``) but never annotations, so an annotation saved
after a moment is a person's change.

The same probe keeps every writer honest about what it read: :func:`read_mark` is taken before a command
reads a project, and :func:`changed_since` tells, once the command holds the project's write lease, whether
anything changed since (a task updated after the mark, or a different number of tasks, annotations or skips):
then the command reads again, under the lease, before deciding what to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from connectors.label_studio.client import LabelStudioClient, parse_server_datetime


def _utc(stamp: str) -> pd.Timestamp:
    moment = pd.Timestamp(stamp)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def tasks_changed_since(client: LabelStudioClient, project_id: int, watermark: str) -> list[int] | None:
    """Ids of the project's tasks with ``updated_at`` > ``watermark`` (one Data Manager query); None when
    there are too many to list (more than 1,000)."""
    return client.tasks_updated_after(project_id, watermark)


def annotations_saved_since(
    client: LabelStudioClient, project_id: int, watermark: str, task_ids: Sequence[int]
) -> bool:
    """Whether any of these tasks was created, or had an annotation created or saved, after ``watermark``."""
    if not task_ids:
        return False
    threshold = pd.Timestamp(parse_server_datetime(watermark))
    for task in client.export_tasks(project_id, task_ids):
        stamps = [task.get("created_at")]
        for annotation in task.get("annotations") or []:
            stamps += [annotation.get("created_at"), annotation.get("updated_at")]
        if any(_utc(stamp) > threshold for stamp in stamps if stamp):
            return True
    return False


@dataclass(frozen=True)
class ProjectMark:
    """What a project looked like when a command began to read it: the server's clock (a Data Manager
    datetime, None if the server sent no ``Date``) and its counts (tasks, annotations, skipped ones)."""

    moment: str | None
    counts: tuple[int | None, ...]


def read_mark(client: LabelStudioClient, project_id: int) -> ProjectMark:
    """The project's mark now (one request)."""
    moment, counts = client.project_counts(project_id)
    return ProjectMark(moment, counts)


def changed_since(client: LabelStudioClient, project_id: int, mark: ProjectMark) -> bool:
    """Whether the project may have changed since ``mark``: its counts differ, a task's ``updated_at`` is
    later than the mark (any saved annotation or prediction, deletion of an annotation included), or the
    server cannot say (no clock, too many changes to list)."""
    if mark.moment is None:
        return True
    _, counts = client.project_counts(project_id)
    if counts != mark.counts or None in counts:
        return True
    return client.tasks_updated_after(project_id, mark.moment) != []
