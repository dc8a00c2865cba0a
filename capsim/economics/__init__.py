"""What a deployment costs and which to choose: parts and prices (``pricing``), energy, cost per token
(``cost``), deployment options, ``fit`` (which modes run), ``plan`` (compare and Pareto search)."""
