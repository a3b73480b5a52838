"""Function-calling preference data through the openai SDK: rows with `input.tools`, assistant `tool_calls`
and `tool` turns upload, report their tools, and train a LoRA job on a base model whose chat template
renders tools; malformed tool rows are refused naming the line and field; a base model whose template
cannot render tools is refused at job creation naming the model and the first row with tools."""

import copy
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from alignd_trainer.synthetic import preference_rows, tool_rows
from tests.sdk.conftest import ALIGND_OPTIONS, MODEL, TERMINAL, Server, jsonl, until

TOOLS_MODEL = "tiny-tools"
PLAIN_DPO: Any = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
DPO: dict[str, Any] = {
    "type": "dpo",
    "dpo": {"hyperparameters": {"beta": 0.5, "batch_size": 4, "learning_rate": 2e-3, "max_steps": 6}},
}


def _report(server: Server, key: str, file_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/files/{file_id}/report", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_a_lora_job_trains_on_tool_rows(live: Server, tools_model_dir: Path) -> None:
    live.admin("POST", "/v1/models", {"id": TOOLS_MODEL, "source": str(tools_model_dir)})
    key = live.project_key("sdk-tools")
    client = live.client(key)
    rows = preference_rows(8, seed=4, fmt="openai") + tool_rows(24, seed=4)
    training = client.files.create(file=("tools.jsonl", jsonl(rows)), purpose="fine-tune")
    assert training.status == "processed"
    tools = _report(live, key, training.id)["tools"]
    assert tools == {"count": 24, "example_lines": [9, 10, 11, 12, 13]}

    created = client.fine_tuning.jobs.create(
        model=TOOLS_MODEL, training_file=training.id, extra_body={"method": DPO, "alignd": ALIGND_OPTIONS}
    )
    job = until(
        lambda: (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL and j,
        "the tools job finished",
        timeout=300,
    )
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None


def test_malformed_tool_rows_are_refused_naming_line_and_field(idle: Server) -> None:
    client = idle.client(idle.project_key("sdk-tools-bad"))
    broken = copy.deepcopy(tool_rows(2)[1])
    broken["input"]["messages"][1]["tool_calls"][0]["function"]["arguments"] = {"category": "fruit"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", jsonl([*tool_rows(3), broken])), purpose="fine-tune")
    field = "input.messages[1].tool_calls[0].function.arguments"
    assert caught.value.code == "invalid_file" and caught.value.param == field
    assert caught.value.message.startswith(
        f"Error code: 400 - line 4, field '{field}': expected a string holding a JSON object"
    )

    unanswered = copy.deepcopy(tool_rows(2)[1])
    unanswered["input"]["messages"][2]["tool_call_id"] = "call_404"
    with pytest.raises(openai.BadRequestError, match=r"line 1, field 'input\.messages\[2\]\.tool_call_id'"):
        client.files.create(file=("bad.jsonl", jsonl([unanswered])), purpose="fine-tune")


def test_a_model_whose_template_cannot_render_tools_is_refused_at_creation(idle: Server) -> None:
    key = idle.project_key("sdk-tools-template")
    client = idle.client(key)
    rows = preference_rows(5, seed=2, fmt="openai") + tool_rows(3)
    training = client.files.create(file=("tools.jsonl", jsonl(rows)), purpose="fine-tune")
    plain = client.files.create(file=("plain.jsonl", jsonl(rows[:5])), purpose="fine-tune")

    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=PLAIN_DPO)
    error = caught.value
    assert error.status_code == 400 and (error.param, error.code) == ("model", "tools_not_supported")
    assert f"model {MODEL!r} cannot train on training_file {training.id}: line 6 uses tools" in error.message
    assert "leaves tool definitions, calls or answers out" in error.message

    # The validation file is checked too; rows without tools train on the same model.
    with pytest.raises(openai.BadRequestError, match=f"validation_file {training.id}: line 6"):
        client.fine_tuning.jobs.create(
            model=MODEL, training_file=plain.id, validation_file=training.id, method=PLAIN_DPO
        )
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=plain.id, method=PLAIN_DPO)
    assert job.status in {"validating_files", "queued"}
