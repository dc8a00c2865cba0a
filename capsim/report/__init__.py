"""Reports built from result dataclasses: plots (:mod:`capsim.report.plots`). Tables and JSON/CSV live with
the commands that print them; nothing here scrapes rendered output."""
