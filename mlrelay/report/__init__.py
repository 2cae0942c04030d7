"""`mlrelay report`: one run as a self-contained HTML page with plots, for the disk or the console."""
from mlrelay.report.facts import NoSuchRun, RunFacts, read_facts
from mlrelay.report.page import render_report

__all__ = ["NoSuchRun", "RunFacts", "read_facts", "render_report"]
