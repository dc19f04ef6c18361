"""Change detection for the nightly run: did anything in a project change since relabel last looked?

Label Studio bumps a task's ``updated_at`` whenever one of its annotations or predictions is saved. The
watermark is the server's own clock (the HTTP ``Date`` of a request), so clock skew between machines does not
matter. relabel writes predictions (which bump ``updated_at``) but never annotations, so an annotation saved
after a moment is a person's change.
"""

from __future__ import annotations

from collections.abc import Sequence

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
