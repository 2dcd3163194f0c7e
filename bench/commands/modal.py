"""``echo-bench modal prefetch|deploy|run-nightly``: thin wrappers around the Modal CLI.

Each subcommand shells out to ``python -m modal`` (the CLI of the installed modal
package) on the app module ``bench.backends.modal_app``, so what runs is exactly what
``modal run`` / ``modal deploy`` would run by hand, with Modal's own progress output and
login handling:

* ``prefetch``    -> ``modal run -m bench.backends.modal_app::prefetch``
* ``deploy``      -> ``modal deploy -m bench.backends.modal_app`` (installs the nightly cron)
* ``run-nightly`` -> ``modal run --detach -m bench.backends.modal_app::nightly [--spec S]``
  (once, now; the orchestration runs inside Modal, so the caller, e.g. a GitHub runner,
  returns as soon as it is started; it resumes tonight's unfinished run of the spec)

``--dry-run`` prints the command instead. ``--hf-secret NAME`` attaches the Modal secret
NAME (holding HF_TOKEN) to the app's functions; the official weights are public, so it
is only needed for gated or private weights.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from bench.errors import UserError

APP_MODULE = "bench.backends.modal_app"
HF_SECRET_ENV = "ECHO_BENCH_HF_SECRET"  # read by bench.backends.modal_app at import


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("modal", help="Modal set-up: prefetch weights, deploy the nightly "
                                     "schedule, run the nightly sweep now")
    actions = p.add_subparsers(dest="modal_action", metavar="ACTION", required=True)
    for name, text in (
        ("prefetch", "download the Echo-TTS, codec and Whisper weights into the cache volumes"),
        ("deploy", "deploy the app: workers, prefetch and the nightly schedule (03:00 UTC)"),
        ("run-nightly", "run the nightly sweep on Modal now (detached; results land on the "
                        "outputs volume: fetch them with `echo-bench pull`)"),
    ):
        q = actions.add_parser(name, help=text)
        q.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
        q.add_argument("--hf-secret", metavar="NAME",
                       help="Modal secret holding HF_TOKEN, for gated or private weights")
        q.add_argument("--env", metavar="ENV", help="Modal environment (default: your profile's)")
        if name == "run-nightly":
            q.add_argument("--spec", default="nightly", choices=("nightly", "weekly"),
                           help="the canary (nightly, default) or the full grid (weekly)")
    p.set_defaults(handler=run)


def modal_command(action: str, env: str | None = None, spec: str = "nightly") -> list[str]:
    """The Modal CLI command line for ``action``."""
    base = [sys.executable, "-m", "modal"]
    env_args = ["--env", env] if env else []
    if action == "prefetch":
        return [*base, "run", *env_args, "-m", f"{APP_MODULE}::prefetch"]
    if action == "deploy":
        return [*base, "deploy", *env_args, "-m", APP_MODULE]
    if action == "run-nightly":
        return [*base, "run", "--detach", *env_args, "-m", f"{APP_MODULE}::nightly",
                "--spec", spec]
    raise UserError(f"unknown modal action {action!r}; use prefetch, deploy or run-nightly")


def where_runs_appear(spec: str, env: str | None) -> str:
    """One line telling where the started run will be and how to fetch it."""
    env_part = f" --env {env}" if env else ""
    return (f"the {spec} run appears on the Modal volume echo-bench-outputs as "
            f"runs/<UTC date>-<time>-{spec}-<hex>/ (tonight's unfinished run is resumed "
            f"instead); fetch it with: echo-bench pull{env_part}")


def run(args: argparse.Namespace) -> int:
    spec = getattr(args, "spec", "nightly")
    command = modal_command(args.modal_action, args.env, spec)
    child_env = dict(os.environ)
    if args.hf_secret:
        child_env[HF_SECRET_ENV] = args.hf_secret
    if args.dry_run:
        prefix = f"{HF_SECRET_ENV}={shlex.quote(args.hf_secret)} " if args.hf_secret else ""
        print(prefix + shlex.join(command))
        if args.modal_action == "run-nightly":
            print(where_runs_appear(spec, args.env))
        return 0
    try:
        code = subprocess.run(command, env=child_env, check=False).returncode
    except FileNotFoundError:
        raise UserError(f"cannot run {command[0]}; is the modal package installed?") from None
    if code == 0 and args.modal_action == "run-nightly":
        print(where_runs_appear(spec, args.env))
    return code
