"""relabel: find the labeled items most worth a second look (self-influence) and send them for review."""

from relabel.influence.cg import CgConfig
from relabel.influence.lissa import LissaConfig
from relabel.ranking import SuspicionScorer, rank

__all__ = ["CgConfig", "LissaConfig", "SuspicionScorer", "rank"]
__version__ = "0.1.0"
