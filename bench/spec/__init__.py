"""What a run is: sweep specs and their cells, workload axes, GPU types, predictions in
specs, shipped sweeps, prompt sets and speaker references.

Imports: bench.core.
"""
