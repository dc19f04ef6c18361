"""relabel: find the labeled items most worth a second look (self-influence) and send them for review."""

from relabel.influence.lissa import LissaConfig
from relabel.scorer import SuspicionScorer, rank

__all__ = ["LissaConfig", "SuspicionScorer", "rank"]
__version__ = "0.1.0"
