"""Figures per cell and across runs: statistics, frontier, cost, noise, memory fit,
quality tables, history and step changes, the research's predictions.

Imports: bench.core, bench.spec, bench.store, bench.run, bench.scoring.
"""
