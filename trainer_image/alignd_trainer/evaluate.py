"""`python -m alignd_trainer.evaluate`: run one evaluation (offline with --spec, or managed via ALIGND_* env).

For each batch of data items: render the prompts, generate the replies (batched, seeded: the same
spec gives the same replies), grade every item with every grader, and report the graded items with
the run's progress. A SIGTERM (cancel, preemption) stops between batches: what was graded is already
reported, and a retried attempt grades every item again (the control plane keeps one result per item).

Exit codes and the termination message are the trainer's (`alignd.contract.ExitCode`).
"""

# Before the heavy imports, as in `alignd_trainer.__main__`: a SIGTERM during start-up is recorded.
import signal
import threading

STOP = threading.Event()
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())


import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import torch
from peft import PeftModel
from pydantic import ValidationError

from alignd.contract import EventLevel, ExitCode, ModelFilesResponse, TerminationSummary, TrainerEvent
from alignd.contract.eval_items import (
    GraderResult,
    OutputItem,
    Sample,
    SampleError,
    SampleMessage,
    SampleUsage,
    datasource_row,
)
from alignd.contract.evals import (
    DataRow,
    EvalModel,
    EvalProgress,
    EvalReport,
    EvalRunSpec,
    ModelSource,
    PreferenceGrader,
)
from alignd.contract.templates import TemplateError
from alignd_trainer.errors import BadInputError, OutOfMemory, Terminated, TrainerError
from alignd_trainer.eval_report import EvalReporter, eval_url
from alignd_trainer.generation import ChatGenerator, Completion, Sampling
from alignd_trainer.graders import grade_sample, render_messages
from alignd_trainer.graders.judge import Judge
from alignd_trainer.graders.preference import PreferenceScorer
from alignd_trainer.managed import ManagedJob, managed_job
from alignd_trainer.model import load_causal_lm
from alignd_trainer.remote import download, download_model, is_url, model_cache_root, private_cache_root
from alignd_trainer.report import write_termination_message
from alignd_trainer.retry import default_policy, send_with_retries


def fetch_eval_spec(job: ManagedJob) -> EvalRunSpec:
    url = eval_url(job, "spec")
    response = send_with_retries(
        lambda: httpx.get(url, headers={"Authorization": f"Bearer {job.token}"}, timeout=60),
        what=f"the eval spec request to {url}",
        policy=default_policy(),
    )
    if response.status_code != 200:
        raise BadInputError(
            f"control plane refused the eval spec request ({response.status_code}): {response.text[:300]}"
        )
    return EvalRunSpec.model_validate_json(response.content)


def load_eval_spec(path: str | None, job: ManagedJob | None) -> EvalRunSpec:
    if path is None:
        if job is None:
            raise BadInputError("no --spec given and this is not a managed run (ALIGND_JOB_ID etc. unset)")
        return fetch_eval_spec(job)
    try:
        return EvalRunSpec.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        raise BadInputError(f"eval spec file not found: {path}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise BadInputError(f"invalid eval spec {path}: {problems}") from None


def read_rows(path: Path) -> list[DataRow]:
    """One item per non-empty line: `{"item": {...}, "sample": {...}}`, or the item itself."""
    rows: list[DataRow] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path.name} line {number}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise BadInputError(f"{path.name} line {number}: expected a JSON object")
            item, sample = datasource_row(obj)
            rows.append(DataRow(item=item, sample=sample))
    return rows


def localize_rows(spec: EvalRunSpec) -> list[DataRow]:
    if spec.items is not None:
        return list(spec.items)
    assert spec.items_url is not None
    if not is_url(spec.items_url):
        return read_rows(Path(spec.items_url))
    directory = Path(spec.output_dir) / "inputs"
    directory.mkdir(parents=True, exist_ok=True)
    return read_rows(download(spec.items_url, directory, "items.jsonl"))


def localize_model(source: ModelSource) -> Path:
    """A directory holding the model: as given, or downloaded (once per content) into the model cache."""
    if not source.files:
        return Path(source.location)
    listing = ModelFilesResponse(location=source.location, files=source.files)
    return download_model(listing, model_cache_root(os.environ), fallback_root=private_cache_root())


def load_generator(model: EvalModel) -> ChatGenerator:
    adapter = localize_model(model.adapter) if model.adapter is not None else None
    return ChatGenerator.load(localize_model(model.base), adapter_dir=adapter)


class Evaluation:
    """One run: `setup()` loads what the graders need, `run()` grades every item, `cleanup()` releases."""

    def __init__(self, spec: EvalRunSpec, reporter: EvalReporter, stop: threading.Event) -> None:
        self.spec = spec
        self.reporter = reporter
        self.stop = stop
        self.rows: list[DataRow] = []
        self.generator: ChatGenerator | None = None
        self.judge: Judge | None = None
        self.scorers: dict[str, PreferenceScorer] = {}

    def setup(self) -> None:
        self.rows = localize_rows(self.spec)
        if not self.rows:
            raise BadInputError("the eval run's data source has no items")
        self.event(
            f"Evaluating {len(self.rows)} items"
            + (f" with {self.spec.model.name}" if self.spec.model else "")
            + f"; graders: {', '.join(g.name for g in self.spec.graders)}",
            type="status",
        )
        if self.spec.model is not None:
            self.generator = load_generator(self.spec.model)
        if self.spec.judge is not None:
            self.judge = Judge(self.spec.judge)
        for grader in self.spec.graders:
            if isinstance(grader, PreferenceGrader):
                self.scorers[grader.name] = self._scorer(grader)

    def _scorer(self, grader: PreferenceGrader) -> PreferenceScorer:
        assert self.generator is not None  # the spec refuses a preference grader without a model
        reference = None
        if grader.reference is not None:
            base = localize_model(grader.reference.base)
            reference = load_causal_lm(
                str(base), dtype=next(self.generator.model.parameters()).dtype, device=self.generator.device
            )
            if grader.reference.adapter is not None:
                reference = PeftModel.from_pretrained(
                    reference, str(localize_model(grader.reference.adapter))
                )
            reference.eval()
        return PreferenceScorer(
            self.generator.model, self.generator.tokenizer, self.generator.device, reference=reference
        )

    def run(self) -> None:
        total = len(self.rows)
        self.reporter.send(EvalReport(progress=EvalProgress(done=0, total=total)))
        passed = 0
        for start in range(0, total, self.spec.batch_size):
            if self.stop.is_set():
                raise Terminated(f"stopped by SIGTERM after {start} of {total} items")
            items = self.grade(start, self.rows[start : start + self.spec.batch_size])
            passed += sum(all(r.passed for r in item.results) for item in items)
            done = start + len(items)
            self.reporter.send(EvalReport(items=items, progress=EvalProgress(done=done, total=total)))
        self.event(f"Evaluated {total} items: {passed} passed every grader", type="done")

    def grade(self, start: int, rows: Sequence[DataRow]) -> list[OutputItem]:
        indices = range(start, start + len(rows))
        samples, contexts = self.samples(rows)
        per_grader: dict[str, dict[int, GraderResult]] = {
            name: scorer.grade(grader, list(zip(indices, (r.item for r in rows), strict=True)))
            for name, scorer in self.scorers.items()
            for grader in self.spec.graders
            if grader.name == name and isinstance(grader, PreferenceGrader)
        }
        items = []
        for index, row, sample, context in zip(indices, rows, samples, contexts, strict=True):
            results = [
                per_grader[g.name][index]
                if g.name in per_grader
                else grade_sample(g, row.item, context, judge=self.judge)
                for g in self.spec.graders
            ]
            items.append(
                OutputItem(datasource_item_id=index, datasource_item=row.item, results=results, sample=sample)
            )
        return items

    def samples(self, rows: Sequence[DataRow]) -> tuple[list[Sample], list[dict[str, Any] | None]]:
        """What the model said for each row (and the `sample` templates read); without generation, the
        rows' own samples."""
        if self.spec.input_messages is None or self.generator is None:
            return [Sample() for _ in rows], [row.sample for row in rows]
        prompts: list[list[SampleMessage] | None] = []
        errors: list[str] = []
        for row in rows:
            try:
                prompts.append(render_messages(self.spec.input_messages, row.item, None))
                errors.append("")
            except TemplateError as exc:
                prompts.append(None)
                errors.append(str(exc))
        conversations = [[m.model_dump() for m in p] for p in prompts if p is not None]
        completions = iter(self._complete(conversations))
        samples: list[Sample] = []
        contexts: list[dict[str, Any] | None] = []
        for prompt, error in zip(prompts, errors, strict=True):
            if prompt is None:
                samples.append(self._sample([], None, SampleError(code="template_error", message=error)))
                contexts.append(None)
                continue
            completion = next(completions)
            samples.append(self._sample(prompt, completion, SampleError()))
            contexts.append({"output_text": completion.text})
        return samples, contexts

    def _complete(self, conversations: list[list[dict[str, Any]]]) -> list[Completion]:
        if not conversations:
            return []
        assert self.generator is not None
        sampling = self.spec.sampling
        return self.generator.complete(
            conversations,
            Sampling(
                temperature=sampling.temperature,
                max_new_tokens=sampling.max_completion_tokens,
                top_p=sampling.top_p,
                seed=sampling.seed,
            ),
            batch_size=self.spec.batch_size,
        )

    def _sample(
        self, prompt: list[SampleMessage], completion: Completion | None, error: SampleError
    ) -> Sample:
        sampling = self.spec.sampling
        usage = SampleUsage()
        output: list[SampleMessage] = []
        if completion is not None:
            output = [SampleMessage(role="assistant", content=completion.text)]
            usage = SampleUsage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                total_tokens=completion.prompt_tokens + completion.completion_tokens,
            )
        return Sample(
            input=prompt,
            output=output,
            model=self.spec.model.name if self.spec.model else "",
            finish_reason=completion.finish_reason if completion else "",
            seed=sampling.seed,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_completion_tokens=sampling.max_completion_tokens,
            usage=usage,
            error=error,
        )

    def event(self, message: str, *, type: str = "message", level: EventLevel = EventLevel.info) -> None:
        self.reporter.send(EvalReport(events=[TrainerEvent(type=type, level=level, message=message)]))

    def cleanup(self) -> None:
        if self.judge is not None:
            self.judge.close()


def evaluate(spec: EvalRunSpec, reporter: EvalReporter, stop: threading.Event) -> None:
    evaluation = Evaluation(spec, reporter, stop)
    try:
        evaluation.setup()
        evaluation.run()
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of GPU memory ({str(exc).splitlines()[0]}); lower the run's batch size or "
            "max_completion_tokens"
        ) from None
    finally:
        evaluation.cleanup()


def _fail(error: TrainerError, reporter: EvalReporter | None) -> int:
    message = str(error)
    if reporter is not None:
        level = EventLevel.warn if error.exit_code is ExitCode.TERMINATED else EventLevel.error
        with contextlib.suppress(Exception):
            reporter.send(
                EvalReport(
                    events=[
                        TrainerEvent(
                            type="error",
                            level=level,
                            message=message,
                            data={"exit_code": int(error.exit_code), "reason": error.reason},
                        )
                    ]
                )
            )
        with contextlib.suppress(Exception):
            reporter.close()
    print(f"alignd-evaluate: {error.reason}: {message}", file=sys.stderr)
    write_termination_message(
        TerminationSummary(exit_code=int(error.exit_code), reason=error.reason, message=message[:3000])
    )
    return int(error.exit_code)


def main(argv: Sequence[str] | None = None, *, stop: threading.Event = STOP) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignd_trainer.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--spec", help="EvalRunSpec JSON file (offline); managed runs fetch it")
    ns = parser.parse_args(argv)
    reporter: EvalReporter | None = None
    try:
        job = managed_job(os.environ)
        reporter = EvalReporter(job)
        evaluate(load_eval_spec(ns.spec, job), reporter, stop)
        reporter.close()
        write_termination_message(
            TerminationSummary(exit_code=0, reason="Completed", message="evaluation finished")
        )
        return int(ExitCode.SUCCESS)
    except TrainerError as error:
        return _fail(error, reporter)
    except Exception as exc:
        traceback.print_exc()
        return _fail(TrainerError(f"{type(exc).__name__}: {exc}"), reporter)


if __name__ == "__main__":
    sys.exit(main())
