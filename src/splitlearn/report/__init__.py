"""Results to tables, plots and pages; nothing here trains."""

from splitlearn.report.leakage import RunEvidence, verdicts, write_report

__all__ = ["RunEvidence", "verdicts", "write_report"]
