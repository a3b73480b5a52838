"""`python -m alignd_trainer`: train (offline with --spec, or managed via ALIGND_* env), score, and
helpers to build a tiny model and synthetic data for trying it out offline.

Exit codes are `alignd.contract.ExitCode`; a one-line JSON summary goes to the termination log.
"""

# Before the heavy imports (seconds of torch and transformers): a SIGTERM that arrives while the
# trainer is still starting must be recorded, not kill it without an exit summary.
import signal
import threading

STOP = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: STOP.set())


import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import ValidationError

from alignd.contract import EventLevel, ExitCode, JobSpec, TerminationSummary, TrainerEvent, TruncationMode
from alignd_trainer.artifacts import sink_from_env
from alignd_trainer.distributed import init_distributed, shutdown
from alignd_trainer.errors import BadInputError, OutOfMemory, TrainerError
from alignd_trainer.init_weights import localize_init
from alignd_trainer.managed import MANAGED_ENV, managed_job
from alignd_trainer.merge import publish_merged, wants_merged
from alignd_trainer.remote import (
    fetch_spec,
    localize_checkpoint,
    localize_data,
    localize_model,
    model_cache_root,
)
from alignd_trainer.report import Reporter, reporter_from_env, write_termination_message
from alignd_trainer.score import score_to_path
from alignd_trainer.sft import recipe_class
from alignd_trainer.synthetic import preference_rows, write_jsonl
from alignd_trainer.tiny_model import build_tiny_model

SHUTDOWN_REPORT_SECONDS = 10.0
"""How long a failing or stopped trainer keeps trying to deliver its last reports."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignd_trainer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="run DPO or SFT training (the default command)")
    train.add_argument(
        "--spec", help="JobSpec JSON file (offline); managed runs fetch it from ALIGND_API_URL"
    )
    score = sub.add_parser("score", help="score preference pairs with a model (and a reference)")
    score.add_argument("--model", required=True, help="model directory or adapter directory")
    score.add_argument("--ref", help="reference model directory (adds ref log-probs and reward_margin)")
    score.add_argument("--data", required=True, help="preference JSONL file")
    score.add_argument("--out", required=True, help="output JSONL file, one line per input pair")
    score.add_argument("--max-length", type=int, default=1024)
    score.add_argument("--truncation-mode", choices=[m.value for m in TruncationMode], default="keep_start")
    score.add_argument("--beta", type=float, default=0.1)
    score.add_argument("--batch-size", type=int, default=8)
    tiny = sub.add_parser("make-tiny-model", help="write a tiny random-init Llama model and tokenizer")
    tiny.add_argument("--out", required=True)
    data = sub.add_parser("make-synthetic-data", help="write synthetic preference pairs (JSONL)")
    data.add_argument("--out", required=True)
    data.add_argument("--rows", type=int, default=512)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--format", choices=["standard", "conversational", "openai"], default="standard")
    return parser


def load_spec(path: str | None) -> JobSpec:
    """The spec with its data files and base model on local disk (downloaded in a managed run)."""
    cache = model_cache_root(os.environ)
    if path is None:
        job = managed_job(os.environ)
        if job is None:
            raise BadInputError(f"no --spec given and none of {', '.join(MANAGED_ENV)} is set")
        spec = localize_model(localize_data(fetch_spec(job.api_url, job.job_id, job.token)), job, cache)
        spec = localize_init(spec, job, cache)
        localize_checkpoint(spec, job)
        return spec
    try:
        spec = localize_data(JobSpec.model_validate_json(Path(path).read_bytes()))
    except FileNotFoundError:
        raise BadInputError(f"spec file not found: {path}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise BadInputError(f"invalid job spec {path}: {problems}") from None
    return localize_init(localize_model(spec, None, cache), None, cache)


def run_training(spec_path: str | None, reporter: Reporter) -> int:
    stop = STOP
    dist_info = init_distributed()
    try:
        spec = load_spec(spec_path)
        recipe = recipe_class(spec)(spec, reporter, dist_info, stop, sink_from_env(os.environ))
        try:
            recipe.setup()
            recipe.train()
        finally:
            recipe.cleanup()
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of GPU memory ({str(exc).splitlines()[0]}); lower batch_size or max_length, "
            "raise gradient_accumulation_steps, or enable gradient_checkpointing"
        ) from None
    finally:
        shutdown(dist_info)
    # After the ranks have parted: one rank writing a large model must not hold the others at a
    # barrier until its timeout.
    if dist_info.is_main and wants_merged(recipe.spec):
        publish_merged(recipe.model, recipe.tokenizer, spec=recipe.spec, sink=recipe.sink, reporter=reporter)
    return ExitCode.SUCCESS


def _fail(error: TrainerError, reporter: Reporter | None) -> int:
    message = str(error)
    if reporter is not None:
        level = EventLevel.warn if error.exit_code is ExitCode.TERMINATED else EventLevel.error
        # A reporter that already failed must not stop the termination message from being written.
        with contextlib.suppress(Exception):
            reporter.event(
                TrainerEvent(
                    type="error",
                    level=level,
                    message=message,
                    data={"exit_code": int(error.exit_code), "reason": error.reason},
                )
            )
        with contextlib.suppress(Exception):
            reporter.close(timeout=SHUTDOWN_REPORT_SECONDS)
    print(f"alignd-trainer: {error.reason}: {message}", file=sys.stderr)
    write_termination_message(
        TerminationSummary(exit_code=int(error.exit_code), reason=error.reason, message=message[:3000])
    )
    return int(error.exit_code)


def train_main(spec_path: str | None) -> int:
    reporter: Reporter | None = None
    try:
        reporter = reporter_from_env(os.environ)
        code = run_training(spec_path, reporter)
        reporter.close()
        write_termination_message(
            TerminationSummary(exit_code=0, reason="Completed", message="training finished")
        )
        return code
    except TrainerError as error:
        return _fail(error, reporter)
    except Exception as exc:
        traceback.print_exc()
        return _fail(TrainerError(f"{type(exc).__name__}: {exc}"), reporter)


def tool_main(ns: argparse.Namespace) -> int:
    """The non-training commands; bad input exits with the same code and message style as training."""
    try:
        if ns.command == "score":
            score_to_path(
                ns.out,
                model_dir=ns.model,
                ref_dir=ns.ref,
                data=ns.data,
                max_length=ns.max_length,
                beta=ns.beta,
                batch_size=ns.batch_size,
                truncation_mode=TruncationMode(ns.truncation_mode),
            )
        elif ns.command == "make-tiny-model":
            print(build_tiny_model(ns.out))
        else:
            print(write_jsonl(ns.out, preference_rows(ns.rows, seed=ns.seed, fmt=ns.format)))
    except TrainerError as error:
        print(f"alignd-trainer: {error.reason}: {error}", file=sys.stderr)
        return int(error.exit_code)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = ["train", *args]
    ns = _parser().parse_args(args)
    return train_main(ns.spec) if ns.command == "train" else tool_main(ns)


if __name__ == "__main__":
    sys.exit(main())
