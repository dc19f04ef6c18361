"""relabel: find the labeled items most worth a second look (self-influence) and send them for review."""

from relabel.influence.cg import CgConfig
from relabel.influence.lissa import LissaConfig
from relabel.influence.settings import InfluenceSettings
from relabel.models import ModelSettings
from relabel.pipeline import AuditResult, run_audit
from relabel.scorer import SuspicionScorer, rank
from relabel.settings import AuditSettings

__all__ = [
    "AuditResult",
    "AuditSettings",
    "CgConfig",
    "InfluenceSettings",
    "LissaConfig",
    "ModelSettings",
    "SuspicionScorer",
    "rank",
    "run_audit",
]
__version__ = "0.1.0"
