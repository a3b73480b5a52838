"""Evaluate what alignment did, on a real model, through the openai SDK: a LoRA DPO job over the API
teaches SmolLM2-135M-Instruct to open its answers with a greeting, and asks (`alignd.evals`) for an
eval to run when it succeeds. The eval has a `string_check` on the generated reply and the `preference`
grader; its runs on the tuned model and on the base model (the baseline), over held-out pairs the job
never trained on, show the taught style in the tuned model's replies and not in the base's, and the
same preference measure for both.

Sized for two CPU cores with the recipe of `alignd demo --model smollm2` (LoRA on SmolLM2's top layers,
so backward passes stop there; 16 steps of 4 pairs; sigmoid DPO plus an SFT term on chosen, since DPO
alone widens the margin long before the greeting wins greedy decoding), and greedy replies of a few
tokens to six held-out questions."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alignd import demo
from alignd_trainer import style_data
from tests.api.helpers import bearer
from tests.evals.live import TERMINAL, Live, judged_server, until

# A few minutes on two quiet cores; the limit leaves room for a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

HELDOUT = 6
MARGIN = 0.5
"""The tuned model's share of greeting replies must beat the base's by at least this much."""
LORA_TARGETS = [f"layers.{i}.{name}" for i in demo.SMOLLM2_LORA_LAYERS for name in demo.SMOLLM2_LORA_MODULES]
PAIR_SCHEMA = {
    "type": "object",
    "properties": {"prompt": {"type": "array"}, "chosen": {"type": "array"}, "rejected": {"type": "array"}},
    "required": ["prompt", "chosen", "rejected"],
}


@pytest.fixture
def live(tmp_path: Path, smollm2_dir: Path) -> Iterator[Live]:
    with judged_server(tmp_path / "alignd", {"smollm2": smollm2_dir}) as server:
        yield server


def test_a_dpo_job_teaches_a_style_the_eval_shows_against_the_base(live: Live) -> None:
    client = live.client()
    train, heldout = style_data.style_rows(heldout=HELDOUT)
    evaluation = client.evals.create(
        name="greets",
        data_source_config={"type": "custom", "item_schema": PAIR_SCHEMA, "include_sample_schema": True},
        testing_criteria=[
            {
                "type": "string_check",
                "name": "greets",
                "input": "{{sample.output_text}}",
                "reference": style_data.GREETING.rstrip("!"),
                "operation": "like",
            },
            {"type": "preference", "name": "prefers chosen", "beta": 0.1},
        ],
    )
    after_training: dict[str, Any] = {
        "eval_id": evaluation.id,
        "input_messages": {
            "type": "template",
            "template": [
                {"role": "system", "content": "{{item.prompt.0.content}}"},
                {"role": "user", "content": "{{item.prompt.1.content}}"},
            ],
        },
        "sampling_params": {"temperature": 0, "max_completion_tokens": 6, "seed": 0},
    }
    job = client.fine_tuning.jobs.create(
        model="smollm2",
        training_file=live.upload(train),
        validation_file=live.upload(heldout),
        suffix="greets",
        extra_body={
            "method": {
                "type": "dpo",
                "dpo": {
                    "hyperparameters": {
                        "beta": 0.1,
                        "batch_size": 4,
                        "n_epochs": 3,
                        "max_steps": demo.SMOLLM2_STEPS,
                        "learning_rate": 3e-3,
                        "loss_type": ["sigmoid", "sft"],
                        "warmup_ratio": 0.1,
                        "save_steps": 1000,
                    }
                },
            },
            "alignd": {
                "lora": {"r": 8, "alpha": 16, "target_modules": LORA_TARGETS},
                "resources": {"gpus": 0},
                "merged_weights": False,
                "evals": [after_training],
            },
        },
    )
    job = until(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job.id)).status in {"succeeded", "failed", "cancelled"}
            and j
        ),
        "the DPO job ends",
        timeout=1500,
    )
    assert job.status == "succeeded", job.error

    # The job's events link to the runs: one on the tuned model, one on its base.
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    [linked] = [e for e in events if e.message.startswith("Evaluation runs started")]
    links = {link["role"]: link for link in (linked.data or {})["eval_runs"]}
    assert links["tuned"]["model"] == job.fine_tuned_model and links["base"]["model"] == "smollm2"

    runs = {}
    for role, link in links.items():
        runs[role] = until(
            lambda link=link: (
                (r := client.evals.runs.retrieve(link["run_id"], eval_id=evaluation.id)).status in TERMINAL
                and r
            ),
            f"the {role} run ends",
            timeout=600,
        )
        assert runs[role].status == "completed", runs[role].error
        assert runs[role].result_counts.total == HELDOUT

    def share(role: str, criterion: str) -> float:
        [result] = [r for r in runs[role].per_testing_criteria_results if r.testing_criteria == criterion]
        return result.passed / (result.passed + result.failed)

    replies = {
        role: [
            item.sample.output[0].content
            for item in client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
        ]
        for role, run in runs.items()
    }
    assert share("tuned", "greets") >= share("base", "greets") + MARGIN, replies
    # The same measure in both columns: held-out pairs whose chosen the model finds more likely.
    assert share("tuned", "prefers chosen") > share("base", "prefers chosen"), replies

    report = (runs["tuned"].model_extra or {})["alignd"]["report_file_id"]
    content = httpx.get(f"{live.base_url}/files/{report}/content", headers=bearer(live.key), timeout=60)
    assert content.status_code == 200 and runs["tuned"].id in content.text
