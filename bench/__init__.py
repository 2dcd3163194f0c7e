"""echo-bench: the benchmark and quality harness for the Echo-TTS sampler.

The harness is a few packages named after the flow of data, each allowed to import only
the packages before it in ``LAYERS`` (and ``echo_tts``), never one after it:

spec -> run -> store -> scoring -> analysis -> report / gate, with backends and commands
on top. ``store`` sits below ``run`` in the import order because the runner writes into
the store while the store knows nothing of how records are made. ``tests/unit/
test_import_order.py`` walks every import and fails on a circle or an arrow back up.
"""

LAYERS: tuple[str, ...] = (
    "core",  # plumbing every layer uses: user errors, fault hooks, device/dtype choice
    "spec",  # what a run is: sweep specs and cells, workload axes, GPUs, prompts, speakers
    "store",  # the run directory: manifest, records, scores, parquet, history index
    "run",  # executing cells: schedule, warm-up, timers, memory, worker, runner
    "scoring",  # metrics over audio: ASR WER/CER, SIM, MOS; caches; outcomes; controls
    "perf",  # the profiler: our sampler vs the reference implementation vs the FLOP floor
    "analysis",  # per-cell figures: statistics, frontier, cost, noise, history, predictions
    "report",  # HTML and Markdown reports, plots
    "gate",  # CI gate: baseline vs candidate, statistical decision, exit code
    "backends",  # where cells run: local process, Modal app and its orchestration
    "commands",  # one module per echo-bench command
)
"""Packages of ``bench`` in import order; ``bench.cli`` stands above them all."""
