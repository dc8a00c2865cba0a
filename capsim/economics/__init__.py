"""What a deployment costs and which to choose: the cost model's inputs (``inputs``), parts and prices
(``pricing``), energy, cost per token (``cost``), deployment options, ``feasibility`` (which modes run on a
machine: ``capsim fit``), ``plan`` (compare and Pareto search)."""
