"""From a Scenario to a Prediction, in pipeline order:

- resolve: ``scenario`` (options declared once), ``checks`` (one validation layer), ``presets`` (serving
  systems), ``deployment`` and ``placement`` (where weights live), ``parallel`` (layouts), ``resolve``
  (ids -> database objects; the frozen ``ResolvedScenario``), ``memory`` (the one memory authority);
- per-pass costs: ``formulas`` (one sympy table, compiled once), ``roofline`` (FLOPs and bytes -> time),
  ``passes`` (prefill, decode and mixed steps) with the adjustments for where things run: ``parallel``,
  ``offload`` + ``cache_model``, ``speculative``;
- metrics: ``metrics`` (Prediction, MBU/MFU, S-MBU/S-MFU), ``predict`` (the entry point), ``explain``,
  ``measure`` (the same metrics for a measured run)."""
