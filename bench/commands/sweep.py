"""``echo-bench sweep``: run a sweep spec on a backend and store one record per generation."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.core.errors import UserError
from bench.run.runner import DEFAULT_RUNS_ROOT, Backend, pending_work, run_sweep
from bench.scoring.asr import ASR
from bench.scoring.controls import score_control
from bench.scoring.protocols import get_protocol
from bench.scoring.run_scoring import QualityScorer, make_asr, score_records
from bench.spec.parser import load_spec
from bench.spec.prompt_files import Prompt
from bench.spec.prompts import load_prompts
from bench.spec.shipped import resolve_spec_path, shipped_specs
from bench.spec.sweep import Cell, SweepSpec
from bench.spec.workload_axes import check_prompt_speakers, nfe_per_chunk
from bench.store.run_store import RunStore

if TYPE_CHECKING:
    from bench.analysis.nightly_stages import HistoryStages

DEFAULT_SPEC = "smoke"


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sweep", help="run a sweep spec (default: the embedded smoke sweep)")
    p.add_argument("spec", nargs="?", default=DEFAULT_SPEC,
                   help="a TOML file, or the name of a shipped sweep "
                        f"({', '.join(shipped_specs())}); default smoke")
    p.add_argument("--backend", choices=("local", "modal"), default="local")
    p.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT,
                   help=f"folder holding run directories (default {DEFAULT_RUNS_ROOT})")
    p.add_argument("--resume", metavar="RUN", help="resume this run (folder or id)")
    p.add_argument("--new", action="store_true",
                   help="start a new run even if an unfinished run of this spec exists")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells, NFE per cell and the number of generations; run nothing")
    p.add_argument("--yes", action="store_true",
                   help="accept grids above [limits].max_cells and skip confirmations")
    p.add_argument("--ignore-gpu", action="store_true",
                   help="local backend: run cells that name a GPU type on this machine anyway")
    p.add_argument("--no-score", action="store_true", help="skip Whisper scoring")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--adaptive", action="store_true",
                      help="run the spec's [adaptive] stages: a first batch of prompts for "
                           "every cell, more only for undecided cells (a spec with [adaptive] "
                           "does this by default)")
    mode.add_argument("--no-adaptive", action="store_true",
                      help="run every cell on every prompt even if the spec has [adaptive] "
                           "or [history] (a [history] spec's full run is the audit later "
                           "runs are checked against)")
    p.set_defaults(handler=run)


def print_plan(spec: SweepSpec) -> None:
    prompts = load_prompts(spec.prompts)
    per_cell = len(prompts) * len(spec.measure.seeds) * spec.measure.repeats
    print(f"sweep {spec.name}: {len(spec.cells)} cells x {len(prompts)} prompts x "
          f"{len(spec.measure.seeds)} seeds x {spec.measure.repeats} repeats = "
          f"{per_cell * len(spec.cells)} generations (+{spec.measure.warmup} warm-up per cell, "
          "up to 2 more for compiled cells)")
    print(f"{'cell':<12} {'NFE/chunk':>9}  settings")
    for cell in spec.cells:
        print(f"{cell.id:<12} {nfe_per_chunk(cell):>9}  {cell.label}")
    if spec.predictions:
        print_predictions(spec)


def make_backend(args: argparse.Namespace, spec: SweepSpec, stack: contextlib.ExitStack
                 ) -> tuple[Backend, Callable[[], ASR] | None]:
    """The backend for ``--backend``, and for Modal the factory of its remote ASR (None:
    score here). ``stack`` holds what must outlive the sweep (the running Modal app)."""
    if args.backend == "modal":
        from bench.commands.modal_backend import modal_backend

        return modal_backend(spec, confirm=not args.yes, stack=stack)
    from bench.backends.local import LocalBackend

    return LocalBackend(ignore_gpu=args.ignore_gpu), None


class CellScorer:
    """Scores each cell's generations as soon as the cell finishes: WER (Whisper here,
    or through ``make_remote`` on a remote GPU), then the quality metrics of
    ``measure.sim``/``measure.mos`` (every model loaded once). A metric whose model is
    missing is announced once and recorded as skipped; generations are kept and can be
    scored later with ``echo-bench score``."""

    def __init__(self, spec: SweepSpec, make_remote: Callable[[], ASR] | None = None) -> None:
        self.spec = spec
        self.make_remote = make_remote
        self.asr: ASR | None = None
        self.quality: QualityScorer | None = None
        self.failed = 0

    def __call__(self, store: RunStore, cell: Cell, keys: list[str]) -> None:
        self.score(store, keys)

    def score(self, store: RunStore, keys: list[str] | None = None) -> None:
        """Score ``keys`` (None: every generation not yet scored with these models)."""
        measure = self.spec.measure
        if self.asr is None:
            self.asr = (self.make_remote() if self.make_remote is not None
                        else make_asr(measure.asr, measure.asr_device))
        outcome = score_records(store, self.asr, keys=keys,
                                protocol=get_protocol(measure.wer_protocol))
        self.failed += len(outcome.failed)
        if self.quality is None:
            self.quality = QualityScorer.load(measure.sim, measure.mos, measure.asr_device)
            if self.quality.note:  # a "when present" model fell back: said once per sweep
                print(self.quality.note)
            for name, message in self.quality.missing.items():
                print(f"{name} not scored: {message}")
        if self.quality:
            self.quality.score(store, keys)

    def control(self, run_dir: Path) -> None:
        """Score the prompt set's own recordings beside the run ([measure] control)."""
        if self.asr is None:
            self.asr = make_asr(self.spec.measure.asr, self.spec.measure.asr_device)
        done = score_control(run_dir, load_prompts(self.spec.prompts), self.asr,
                             get_protocol(self.spec.measure.wer_protocol), self.quality)
        if done is None:
            print("control: the prompt set has no ground-truth recordings; no control row")
            return
        control_dir, outcome = done
        print(f"control: {outcome.scored} ground-truth recordings scored in {control_dir}")
        self.failed += len(outcome.failed)


def print_predictions(spec: SweepSpec) -> None:
    """Each [[predictions]] row with the cells that test it."""
    labels = {c.id: c.label for c in spec.cells}
    print(f"predictions ({len(spec.predictions)}): proposal -> baseline cell vs proposal cell")
    for p in spec.predictions:
        predicted = f"~{p.speedup:g}x" if p.speedup else "no figure"
        against = ("(baseline row)" if p.candidate_cell is None
                   else f"vs {p.candidate_cell} [{labels[p.candidate_cell]}]")
        print(f"  {p.name} ({predicted}, {p.measure}): {p.baseline_cell} {against}")


def print_cost(spec: SweepSpec, prompts: list[Prompt]) -> None:
    """The Modal backend's cost estimate of the whole spec (what --yes would accept)."""
    from bench.analysis.prices import load_prices
    from bench.backends.modal_estimate import COLD_START_SECONDS, estimate_cost
    from bench.backends.modal_parallel import extra_cold_start_cost
    from bench.spec.gpus import DEFAULT_GPU

    prices = load_prices()
    work = pending_work(spec, prompts, set())[0]
    print(estimate_cost(work, spec.measure.warmup, prices, long_text=spec.prompts.long_text,
                        region=spec.modal.region).render())
    extra = extra_cold_start_cost(work, prices, spec.prompts.long_text, COLD_START_SECONDS,
                                  DEFAULT_GPU)
    if extra:
        print(f"chunk_workers cells add {extra[0]} container start(s): +{extra[1]:.2f} USD "
              "(not in the table above)")


def history_stages(spec: SweepSpec, prompts: list[Prompt], root: Path
                   ) -> HistoryStages | None:
    """The stages of a ``[history]`` spec's run, or None (said in a line) when there is no
    full run to check against: then this run is the full one."""
    from bench.analysis.nightly_stages import HistoryStages

    found = HistoryStages.prepare(spec, prompts, root, None)
    if isinstance(found, str):
        print(f"history: {found}; running in full (the audit later runs are checked against)")
        return None
    print(f"history: checking against {found.reference.path.name} (the last full run): "
          f"every cell on {len(found.looks[0])} of {len(found.order)} draws first")
    return found


def run(args: argparse.Namespace) -> int:
    spec = load_spec(resolve_spec_path(args.spec), allow_large=args.yes)
    prompts = load_prompts(spec.prompts)
    problem = check_prompt_speakers(spec.cells, prompts)
    if problem is not None:
        raise UserError(problem)
    adaptive = None
    if args.adaptive or (spec.adaptive is not None and not args.no_adaptive):
        from bench.commands.adaptive_sweep import AdaptiveStages

        # Made before anything runs: a spec that cannot run adaptively stops here.
        adaptive = AdaptiveStages(spec, prompts, None)
    history = None
    if spec.history is not None and not args.no_adaptive:
        history = history_stages(spec, prompts, args.out)
    if args.dry_run:
        print_plan(spec)
        if adaptive is not None:
            print(f"adaptive: {len(adaptive.batches)} stages of prompts "
                  f"({', '.join(str(len(b)) for b in adaptive.batches)}); the first runs every "
                  "cell, later ones only undecided cells")
        if history is not None:
            print(f"history: {len(history.looks)} looks over {len(history.order)} draws "
                  f"(a prompt and a seed; {len(history.looks[0])} first), later looks only "
                  "for cells where a step is still possible")
        if args.backend == "modal":
            print_cost(spec, prompts)
        return 0
    with contextlib.ExitStack() as stack:
        backend, remote_asr = make_backend(args, spec, stack)
        scorer = (CellScorer(spec, remote_asr) if spec.measure.score and not args.no_score
                  else None)
        staged = adaptive or history
        if staged is not None:
            staged.score = None if scorer is None else scorer.score
        outcome = run_sweep(spec, backend, root=args.out, resume=args.resume, new=args.new,
                            after_cell=scorer,
                            before_finalize=None if scorer is None else scorer.score,
                            staging=None if staged is None else staged.staging())
    print(f"run directory: {outcome.run_dir}")
    if scorer is not None and spec.measure.control:
        scorer.control(outcome.run_dir)
    if scorer is not None and scorer.asr is not None:
        note = " (random-weight ASR: WER not meaningful)" if scorer.asr.is_random else ""
        metrics = [m.model_id for m in scorer.quality.metrics] if scorer.quality else []
        also = f" and {', '.join(metrics)}" if metrics else ""
        print(f"scored with {scorer.asr.name}{also}{note}; {scorer.failed} scoring failures")
    print(f"generations: {outcome.ok} ok, {outcome.failed} failed, {outcome.skipped} done earlier "
          f"(of {outcome.total})")
    for label, error in outcome.failures.items():
        print(f"  failed cell [{label}]: {error}")
    if not args.no_report:
        from bench.report import render_run_report

        print(f"report: {render_run_report(outcome.run_dir)}")
    return outcome.exit_code or (1 if scorer is not None and scorer.failed else 0)
