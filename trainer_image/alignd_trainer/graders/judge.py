"""`score_model` and `label_model`: a judge model behind an OpenAI-compatible chat endpoint grades a sample.

The endpoint is the admin's (`ALIGND_EVAL_JUDGE_BASE_URL`): vLLM, OpenAI, or alignd's own
`/v1/chat/completions`. Judges are asked for a plain answer and read leniently, since small models
do not follow a JSON schema: a score is the first number in the reply, a label the one the reply names
first. A reply with no number or no label is an error on that item (it fails); an endpoint that stays
unreachable under the trainer's retry policy fails the run with the retriable infrastructure code.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from alignd.contract.eval_items import GraderResult, SampleMessage
from alignd.contract.evals import (
    JudgeEndpoint,
    JudgeSampling,
    LabelModelGrader,
    ScoreModelGrader,
)
from alignd_trainer.errors import BadInputError, InfrastructureError
from alignd_trainer.retry import RetryPolicy, default_policy, send_with_retries

NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
DEFAULT_JUDGE_TOKENS = 64


class JudgeReplyError(ValueError):
    """The judge answered, but not with what the grader asked for."""


@dataclass
class Judge:
    """One client for the run's judge endpoint."""

    endpoint: JudgeEndpoint
    policy: RetryPolicy | None = None

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}
        self._client = httpx.Client(headers=headers, timeout=self.endpoint.timeout_seconds)
        self._url = f"{self.endpoint.base_url.rstrip('/')}/chat/completions"

    def __repr__(self) -> str:
        return f"Judge(url={self._url!r})"

    def close(self) -> None:
        self._client.close()

    def complete(self, model: str, messages: Sequence[SampleMessage], sampling: JudgeSampling | None) -> str:
        """The judge's reply text. 4xx (an unknown judge model, a refused key) is bad input: retrying
        the run cannot fix the eval's grader or the admin's settings."""
        body: dict[str, Any] = {"model": model, "messages": [m.model_dump() for m in messages]}
        sampling = sampling or JudgeSampling()
        body["temperature"] = sampling.temperature if sampling.temperature is not None else 0.0
        body["max_completion_tokens"] = sampling.max_completions_tokens or DEFAULT_JUDGE_TOKENS
        if sampling.top_p is not None:
            body["top_p"] = sampling.top_p
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        response = send_with_retries(
            lambda: self._client.post(self._url, json=body),
            what=f"the judge request to {self._url}",
            policy=self.policy or default_policy(),
        )
        if response.status_code >= 400:
            raise BadInputError(
                f"the judge endpoint {self._url} refused model {model!r} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise InfrastructureError(
                f"the judge endpoint {self._url} answered without choices[0].message.content: "
                f"{response.text[:300]}"
            ) from None
        return str(content or "")


def parse_score(reply: str, low: float, high: float) -> float:
    """The first number in the reply, which must lie in [low, high]."""
    match = NUMBER.search(reply)
    if match is None:
        raise JudgeReplyError(f"the judge's reply has no number: {reply[:200]!r}")
    value = float(match.group())
    if not low <= value <= high:
        raise JudgeReplyError(f"the judge's score {value:g} is outside the range [{low:g}, {high:g}]")
    return value


def parse_label(reply: str, labels: Sequence[str]) -> str:
    """The label the reply names first (case-insensitive, whole words); a longer label wins a tie, so
    "not relevant" is not read as "relevant"."""
    best: tuple[int, int, str] | None = None
    for label in labels:
        found = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", reply, flags=re.IGNORECASE)
        if found is not None:
            key = (found.start(), -len(label), label)
            best = key if best is None or key < best else best
    if best is None:
        raise JudgeReplyError(f"the judge's reply names none of the labels {list(labels)}: {reply[:200]!r}")
    return best[2]


def grade_score(judge: Judge, grader: ScoreModelGrader, messages: Sequence[SampleMessage]) -> GraderResult:
    reply = judge.complete(grader.model, messages, grader.sampling_params)
    exchange = _exchange(grader.model, messages, reply)
    low, high = grader.range
    try:
        score = parse_score(reply, low, high)
    except JudgeReplyError as exc:
        return GraderResult(
            name=grader.name, type=grader.type, score=low, passed=False, sample=exchange, error=str(exc)
        )
    return GraderResult(
        name=grader.name, type=grader.type, score=score, passed=score >= grader.threshold, sample=exchange
    )


def grade_label(judge: Judge, grader: LabelModelGrader, messages: Sequence[SampleMessage]) -> GraderResult:
    reply = judge.complete(grader.model, messages, None)
    exchange = _exchange(grader.model, messages, reply)
    try:
        label = parse_label(reply, grader.labels)
    except JudgeReplyError as exc:
        return GraderResult(
            name=grader.name, type=grader.type, score=0.0, passed=False, sample=exchange, error=str(exc)
        )
    passed = label in grader.passing_labels
    return GraderResult(
        name=grader.name,
        type=grader.type,
        score=1.0 if passed else 0.0,
        passed=passed,
        sample=exchange | {"label": label},
    )


def _exchange(model: str, messages: Sequence[SampleMessage], reply: str) -> dict[str, Any]:
    """What the judge was asked and answered, kept on the result (OpenAI's grader `sample`)."""
    return {
        "model": model,
        "input": [m.model_dump() for m in messages],
        "output": [{"role": "assistant", "content": reply}],
    }
