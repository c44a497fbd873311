"""The HTML report: figures, metrics, QC and exclusions tables, and methods text from the parameters."""

from brainage.report.build import build_report

__all__ = ["build_report"]
