"""splitlearn: split learning (SplitNN) across parties that never share raw data."""

__version__ = "0.1.0"
