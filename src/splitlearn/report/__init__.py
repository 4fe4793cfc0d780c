"""Results to tables, plots and pages; nothing here trains."""

from splitlearn.report.leakage import RunEvidence, write_report

__all__ = ["RunEvidence", "write_report"]
