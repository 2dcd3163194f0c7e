"""The profiler behind ``echo-bench profile``: our sampler against the reference
implementation (echo-tts==0.1.4) and against the FLOP floor, on the same weights.

Imports: bench.core, bench.spec, bench.store, bench.run, bench.scoring.
"""
