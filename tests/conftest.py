"""Shared fixtures: one real Label Studio server per test session.

The server is started once (≈40 s) on 127.0.0.1 with its data in a temporary folder, and stopped at the end
of the session. If it cannot start, every test that needs it FAILS (never skips): a connector that was not
tested against a real server has not been tested.

Seed it with the helpers in ``tests/label_studio_seeding.py``::

    from tests.label_studio_seeding import create_project, import_tasks, text_classification_config

    def test_something(label_studio):
        project_id = create_project(label_studio, text_classification_config(["pos", "neg"]))
        import_tasks(label_studio, project_id, [...])
        connector = LabelStudioConnector(label_studio.url, label_studio.legacy_token)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from relabel.errors import ConnectorError  # noqa: E402
from scripts.local_label_studio import LocalLabelStudio  # noqa: E402


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLabelStudio]:
    """A started Label Studio server (``.url``, ``.legacy_token``, ``.personal_access_token()``)."""
    data_dir = tmp_path_factory.mktemp("label-studio-data")
    server = LocalLabelStudio(data_dir)
    try:
        server.start(timeout=240)
        server.legacy_token  # noqa: B018  (enables legacy tokens now, so a failure shows up here)
    except ConnectorError as error:
        server.stop()
        pytest.fail(f"The test Label Studio server could not start: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Text features are sentence embeddings (cached on disk): keep the tests' cache out of ~/.cache."""
    import os

    previous = os.environ.get("RELABEL_CACHE_DIR")
    os.environ["RELABEL_CACHE_DIR"] = str(tmp_path_factory.mktemp("relabel-cache"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RELABEL_CACHE_DIR", None)
        else:
            os.environ["RELABEL_CACHE_DIR"] = previous
