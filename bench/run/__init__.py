"""Executing cells: the interleaved schedule, warm-up, device timers, memory trackers,
machine state, the worker (one loaded pipeline) and the resumable runner.

Imports: bench.core, bench.spec, bench.store.
"""
