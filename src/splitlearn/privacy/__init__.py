"""Privacy of the smashed data: distance correlation, held-out leakage, NoPeek and DP noise."""

from splitlearn.privacy.dcor import distance_correlation, distance_covariance, leakage
from splitlearn.privacy.dp import GaussianRelease, epsilon
from splitlearn.privacy.nopeek import NoPeek, detect_collapse

__all__ = ["GaussianRelease", "NoPeek", "detect_collapse", "distance_correlation", "distance_covariance", "epsilon", "leakage"]
