"""Settings for the whole test run.

OpenMP worker threads that wait for work spin on their core by default (libgomp spins
for a while before it sleeps). On a busy 2-core machine, the one the suite must survive
(issue 22), the spinning threads take the cores from the threads that have work: a tiny
model generation measured 5-9 s instead of 0.3-0.7 s beside other jobs, at 2 threads.
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep; a quiet machine loses next to
nothing. OpenMP reads it once, when torch loads it, so it is set here: pytest imports
this file before any test module (and so before torch); the CLI subprocesses of the
reliability tests inherit it. A value already in the environment is kept.

torch.compile on the CPU (the compiled-forward tests, the profile rehearsal) first proves
each vector instruction set the CPU reports by building a test kernel and loading it in a
fresh Python that imports torch: ~3 s per set, again in every process that compiles.
``TORCHINDUCTOR_VEC_ISA_OK=1`` takes the CPU's word for the base sets (the compiler is
the same gcc that builds every other kernel, so a set it could not build would fail the
first compile loudly, not silently).

Hypothesis times its examples too: a 200 ms deadline per example and a health check
that fails when generating data is slow. Both are wall-clock checks that fail at random
on a busy machine, so the default profile turns them off for every property test
(tests that set their own ``@settings`` keep these defaults for what they leave out).
"""

from __future__ import annotations

import os
import sys
import warnings

from hypothesis import HealthCheck, settings  # (hypothesis does not load torch)

if "torch" in sys.modules:  # a plugin loaded it first: this process keeps spinning
    warnings.warn("torch was imported before tests/conftest.py; OMP_WAIT_POLICY=PASSIVE "
                  "applies to subprocesses only", stacklevel=1)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")

settings.register_profile("echo-bench", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("echo-bench")
