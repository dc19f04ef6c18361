"""Label Studio: the only package in relabel that speaks to a Label Studio server.

==================  ==============================================================================
module              job
==================  ==============================================================================
``client``          the server's operations, on label-studio-sdk (auth, errors, raw HTTP where needed)
``config``          labeling configs: the single-choice Choices control and the input kind
``annotations``     which annotations count, which label wins
``pull``            a project → :class:`relabel.dataset.LabeledDataset`
``queue_plan``      the review queue's names and results, and the pure planning of a push
``push``            carries out a push (view or review project)
``review``          sync decisions back, read them, undo
``changes``         the nightly run's change probe
``connector``       :class:`LabelStudioConnector`, all of it behind one object
==================  ==============================================================================

Depends only on the core's dataset types (:mod:`relabel.dataset`) and errors (:mod:`relabel.errors`).
"""

from connectors.label_studio.client import LabelStudioClient
from connectors.label_studio.config import ClassificationTarget, LabelingConfig, parse_labeling_config
from connectors.label_studio.connector import LabelStudioConnector

__all__ = [
    "ClassificationTarget",
    "LabelStudioClient",
    "LabelStudioConnector",
    "LabelingConfig",
    "parse_labeling_config",
]
