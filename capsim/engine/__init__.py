"""From a Scenario to a Prediction, in pipeline order:

- resolve: ``scenario`` (options declared once), ``checks`` (one validation layer), ``presets`` (serving
  systems) and ``engines`` (serving-engine profiles, ``engines.toml``), ``layout`` (TP x PP x DP x EP x
  attention-DP), ``deployment`` and ``placement`` (where weights live, which device computes), ``resolve``
  (ids -> database objects) giving the frozen ``resolved.ResolvedScenario``, ``memory`` (the one memory
  authority);
- per-pass times: ``formulas`` (one sympy table, compiled once), ``roofline`` (FLOPs and bytes -> time),
  ``passes`` (prefill, decode and mixed steps) with the adjustments for where things run: ``parallel``
  (communication and load balance of layouts), ``offload`` + ``cache_model``, ``speculative``; what they decided
  is typed in ``reports``;
- metrics: ``metrics`` (Prediction, MBU/MFU, S-MBU/S-MFU), ``predict`` (the entry point), ``explain``,
  ``measure`` (the same metrics for a measured run)."""
