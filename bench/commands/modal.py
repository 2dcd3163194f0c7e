"""``echo-bench modal prefetch|deploy|run-nightly|billing``: Modal set-up and the nightly
by hand.

``prefetch`` and ``deploy`` shell out to ``python -m modal`` (the CLI of the installed
modal package) on the app module ``bench.backends.modal_app``, so what runs is exactly
what ``modal run`` / ``modal deploy`` would run by hand, with Modal's own progress output
and login handling:

* ``prefetch``    -> ``modal run -m bench.backends.modal_app::prefetch``
* ``deploy``      -> ``modal deploy -m bench.backends.modal_app`` (installs the schedules)

``run-nightly`` starts the *deployed* app's ``nightly`` function (``Function.from_name(
"echo-bench", "nightly").spawn(spec)``) and returns at once with the FunctionCall id:
the orchestration runs inside Modal (non-preemptible, resumable), so the caller, e.g. a
GitHub runner, never waits for hours. It resumes tonight's unfinished run of the spec.

``billing RUN`` calls the deployed app's ``billing`` function on a run of the outputs
Volume: it reads Modal's billing report for the run's hours again and records the billed
cost in the run's manifest, final once those hours are settled (a day after the run's
last hour), provisional before (bench.backends.billing).

``--dry-run`` prints what would run. ``--hf-secret NAME`` attaches the Modal secret
NAME (holding HF_TOKEN) to the app's functions; the official weights are public, so it
is only needed for gated or private weights.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.errors import UserError
from bench.store.layout import SAFE_RUN_ID

APP_MODULE = "bench.backends.modal_app"
APP_NAME = "echo-bench"  # bench.backends.modal_app.APP_NAME (not imported: no image build)
HF_SECRET_ENV = "ECHO_BENCH_HF_SECRET"  # read by bench.backends.modal_app at import
SCHEDULED_SPECS = ("nightly", "weekly")

Lookup = Callable[..., Any]


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("modal", help="Modal set-up: prefetch weights, deploy the nightly "
                                     "schedule, start the nightly run now")
    actions = p.add_subparsers(dest="modal_action", metavar="ACTION", required=True)
    for name, text in (
        ("prefetch", "download the Echo-TTS, codec, Whisper and SIM/MOS scoring weights into "
                     "the cache volumes"),
        ("deploy", "deploy the app: workers, prefetch and the schedules (canary 03:00 UTC "
                   "Mon-Sat, full grid Sun)"),
        ("run-nightly", "start the deployed nightly on Modal now and return (results land on "
                        "the outputs volume: fetch them with `echo-bench pull`)"),
        ("billing", "read Modal's billing report for a run on the outputs volume again and "
                    "record its billed cost (final once its hours are settled)"),
    ):
        q = actions.add_parser(name, help=text)
        q.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
        q.add_argument("--env", metavar="ENV", help="Modal environment (default: your profile's)")
        if name == "billing":
            q.add_argument("run", metavar="RUN", help="run id on the outputs volume")
        elif name != "run-nightly":  # the deployed app already has its secrets
            q.add_argument("--hf-secret", metavar="NAME",
                           help="Modal secret holding HF_TOKEN, for gated or private weights")
        else:
            q.add_argument("--spec", default="nightly", choices=SCHEDULED_SPECS,
                           help="the canary (nightly, default) or the full grid (weekly)")
            q.add_argument("--summary", type=Path, metavar="FILE.md",
                           help="also append where the run appears to FILE "
                                "(e.g. $GITHUB_STEP_SUMMARY)")
    p.set_defaults(handler=run)


def modal_command(action: str, env: str | None = None) -> list[str]:
    """The Modal CLI command line for ``prefetch`` or ``deploy``."""
    base = [sys.executable, "-m", "modal"]
    env_args = ["--env", env] if env else []
    if action == "prefetch":
        return [*base, "run", *env_args, "-m", f"{APP_MODULE}::prefetch"]
    if action == "deploy":
        return [*base, "deploy", *env_args, "-m", APP_MODULE]
    raise UserError(f"unknown modal action {action!r}; use prefetch, deploy, run-nightly or "
                    "billing")


def where_runs_appear(spec: str, env: str | None, call_id: str | None) -> str:
    """What was started and where its run will be, in one line."""
    env_part = f" --env {env}" if env else ""
    started = f"started Modal call {call_id}" if call_id else "would start the deployed nightly"
    return (f"{started} ({spec}): the run appears on the Modal volume echo-bench-outputs as "
            f"runs/<UTC date>-<time>-{spec}-<hex>/ (tonight's unfinished run of {spec} is "
            f"resumed instead); fetch it with `echo-bench pull{env_part}`")


def start_nightly(spec: str, env: str | None, lookup: Lookup | None = None) -> str:
    """Spawn the deployed app's ``nightly`` function on ``spec``; its FunctionCall id."""
    import modal
    from modal.exception import NotFoundError

    lookup = lookup if lookup is not None else modal.Function.from_name
    try:
        function = lookup(APP_NAME, "nightly", environment_name=env)
        call = function.spawn(spec)
    except NotFoundError:
        raise UserError(f"no deployed {APP_NAME} app with a nightly function"
                        + (f" in environment {env!r}" if env else "")
                        + "; deploy it first: echo-bench modal deploy") from None
    return str(call.object_id)


def read_billing(run_id: str, env: str | None, lookup: Lookup | None = None) -> str:
    """Call the deployed app's ``billing`` function on ``run_id``; the line it recorded."""
    import modal
    from modal.exception import NotFoundError

    if not SAFE_RUN_ID.fullmatch(run_id):
        raise UserError(f"bad run id {run_id!r}: expected a folder name under runs/ on the "
                        "outputs volume (see `echo-bench pull`)")
    lookup = lookup if lookup is not None else modal.Function.from_name
    try:
        return str(lookup(APP_NAME, "billing", environment_name=env).remote(run_id))
    except NotFoundError as err:
        raise UserError(f"{err}; is the {APP_NAME} app deployed (echo-bench modal deploy) and "
                        f"is {run_id} on its outputs volume?") from None


def run(args: argparse.Namespace) -> int:
    if args.modal_action == "billing":
        print(f"would call {APP_NAME}.billing({args.run!r})" if args.dry_run
              else read_billing(args.run, args.env))
        return 0
    if args.modal_action == "run-nightly":
        call_id = None if args.dry_run else start_nightly(args.spec, args.env)
        line = where_runs_appear(args.spec, args.env, call_id)
        print(line)
        if args.summary is not None:
            with open(args.summary, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return 0
    command = modal_command(args.modal_action, args.env)
    child_env = dict(os.environ)
    if args.hf_secret:
        child_env[HF_SECRET_ENV] = args.hf_secret
    if args.dry_run:
        prefix = f"{HF_SECRET_ENV}={shlex.quote(args.hf_secret)} " if args.hf_secret else ""
        print(prefix + shlex.join(command))
        return 0
    try:
        return subprocess.run(command, env=child_env, check=False).returncode
    except FileNotFoundError:
        raise UserError(f"cannot run {command[0]}; is the modal package installed?") from None
