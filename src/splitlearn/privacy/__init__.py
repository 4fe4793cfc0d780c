"""Privacy of the smashed data: distance correlation, held-out leakage and NoPeek."""

from splitlearn.privacy.dcor import distance_correlation, distance_covariance, leakage
from splitlearn.privacy.nopeek import NoPeek, detect_collapse

__all__ = ["NoPeek", "detect_collapse", "distance_correlation", "distance_covariance", "leakage"]
