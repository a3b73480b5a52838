"""Rows with tools in the trainer: rendered through the chat template with the tools, OpenAI tool calls in
the template's shape; a template that cannot render tools is bad input; the control plane's check (jinja2
without transformers) agrees with the trainer's on every kind of template."""

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from alignd.contract import ExitCode, PreferenceExample, TruncationMode, parse_preference_line
from alignd.contract.tools import template_messages
from alignd.jobs.tools_check import tools_problem
from alignd_trainer.data import ToolsNotRendered, tokenize_example, tokenize_examples
from alignd_trainer.errors import BadInputError
from alignd_trainer.synthetic import FIND_TOOL, preference_rows, tool_rows
from alignd_trainer.tiny_model import CHAT_TEMPLATE, TOOLS_CHAT_TEMPLATE, with_chat_template

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tokenizer(tools_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tools_model_dir)


def _examples(rows: list[dict[str, Any]]) -> list[PreferenceExample]:
    return [parse_preference_line(json.dumps(row), line) for line, row in enumerate(rows, start=1)]


def test_the_prompt_holds_the_tool_definitions_as_the_template_renders_them(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    row = tool_rows(1)[0]
    pair = tokenize_example(tokenizer, _examples([row])[0], 0)

    prompt = tokenizer.decode(pair.prompt_ids)
    assert json.dumps(FIND_TOOL) in prompt  # the template's `tool | tojson`
    expected = tokenizer.apply_chat_template(
        row["input"]["messages"], tools=[FIND_TOOL], tokenize=True, add_generation_prompt=True
    )
    assert pair.prompt_ids == list(expected["input_ids"])

    # The completions are the template's rendering of an assistant tool call, arguments as an object.
    chosen = tokenizer.decode(pair.chosen_ids)
    rejected = tokenizer.decode(pair.rejected_ids)
    category = json.loads(row["preferred_output"][0]["tool_calls"][0]["function"]["arguments"])["category"]
    assert chosen.startswith('<tool_call>\n{"name": "find_thing", "arguments": {"category": "' + category)
    assert rejected.startswith('<tool_call>\n{"name": "find_thing", "arguments": {"category": ')
    assert chosen != rejected


def test_tool_turns_in_the_prompt_render_as_tool_responses(tokenizer: PreTrainedTokenizerBase) -> None:
    row = tool_rows(2)[1]
    pair = tokenize_example(tokenizer, _examples([row])[0], 0)
    answer = row["input"]["messages"][2]["content"]
    assert f"<tool_response>\n{answer}\n</tool_response>" in tokenizer.decode(pair.prompt_ids)
    assert tokenizer.decode(pair.chosen_ids) == f"{answer}.</s>\n"


def test_openai_tool_calls_become_the_template_shape() -> None:
    [call_turn] = tool_rows(1)[0]["preferred_output"]
    [converted] = template_messages([call_turn])
    assert converted["content"] == ""
    assert converted["tool_calls"][0]["function"]["arguments"] == json.loads(
        call_turn["tool_calls"][0]["function"]["arguments"]
    )
    assert call_turn["content"] is None  # the row itself is left as it was


def test_rows_without_tools_render_as_without_the_tools_argument(tokenizer: PreTrainedTokenizerBase) -> None:
    row = preference_rows(1, fmt="openai")[0]
    pair = tokenize_example(tokenizer, _examples([row])[0], 0)
    expected = tokenizer.apply_chat_template(
        row["input"]["messages"], tokenize=True, add_generation_prompt=True
    )
    assert pair.prompt_ids == list(expected["input_ids"])
    assert "<tools>" not in tokenizer.decode(pair.prompt_ids)


RAISING = (
    "{% if tools %}{{ raise_exception('This model does not support tools.') }}{% endif %}" + CHAT_TEMPLATE
)


@pytest.mark.parametrize(
    ("template", "problem"),
    [(CHAT_TEMPLATE, "leaves tool definitions, calls or answers out"), (RAISING, "does not support tools")],
    ids=["ignores-tools", "raises"],
)
def test_a_template_that_cannot_render_tools_is_bad_input_naming_the_line_and_model(
    template: str, problem: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = with_chat_template(tiny_model_dir, tmp_path / "model", template)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = preference_rows(2, fmt="openai") + tool_rows(2)
    with pytest.raises(ToolsNotRendered) as caught:
        tokenize_examples(
            tokenizer, _examples(rows), max_length=1024, truncation_mode=TruncationMode.keep_start
        )
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    message = str(caught.value)
    assert message.startswith(f"line 3 uses tools, but the chat template of {model_dir} ")
    assert problem in message
    # Without tools in the rows, the same template is fine.
    plain = tokenize_examples(
        tokenizer, _examples(rows[:2]), max_length=1024, truncation_mode=TruncationMode.keep_start
    )
    assert len(plain.pairs) == 2


DEFINITIONS_ONLY = "{% for tool in tools or [] %}{{ tool | tojson }}{% endfor %}" + CHAT_TEMPLATE
"""Shows the tool definitions but renders a tool call as its empty content."""
TOOL_USE_LIST = "tokenizer_config list with tool_use"
CONFIG_STRING = "tokenizer_config string, special tokens as AddedToken objects"


def test_a_row_with_tool_calls_but_no_tools_uses_tools(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(
        with_chat_template(tiny_model_dir, tmp_path / "m", CHAT_TEMPLATE)
    )
    row = tool_rows(1)[0]
    del row["input"]["tools"]
    with pytest.raises(ToolsNotRendered, match=r"^line 2 uses tools"):
        tokenize_examples(
            tokenizer,
            _examples([*preference_rows(1, fmt="openai"), row]),
            max_length=1024,
            truncation_mode=TruncationMode.keep_start,
        )


def test_a_template_error_on_a_row_is_bad_input_naming_the_line(
    tools_model_dir: Path, tmp_path: Path
) -> None:
    strict = "{% for m in messages %}{% if m.role == 'developer' %}{{ raise_exception('no developer role') }}"
    strict += "{% endif %}{% endfor %}" + TOOLS_CHAT_TEMPLATE
    tokenizer = AutoTokenizer.from_pretrained(with_chat_template(tools_model_dir, tmp_path / "m", strict))
    rows = preference_rows(2, fmt="openai")
    rows[1]["input"]["messages"].insert(0, {"role": "developer", "content": "Be brief."})
    with pytest.raises(BadInputError) as caught:
        tokenize_examples(
            tokenizer, _examples(rows), max_length=1024, truncation_mode=TruncationMode.keep_start
        )
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    assert str(caught.value).startswith("line 2: the chat template of ")
    assert str(caught.value).endswith("cannot render this row: no developer role")


@pytest.mark.parametrize(
    "template",
    [TOOLS_CHAT_TEMPLATE, CHAT_TEMPLATE, RAISING, DEFINITIONS_ONLY, TOOL_USE_LIST, CONFIG_STRING],
    ids=["tools", "plain", "raises", "definitions-only", "named", "config-string"],
)
def test_the_control_plane_check_agrees_with_the_trainer(
    template: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    if template == TOOL_USE_LIST:
        # Several named templates in tokenizer_config.json: transformers takes `tool_use` when given tools.
        with_chat_template(tiny_model_dir, model_dir, CHAT_TEMPLATE)
        (model_dir / "chat_template.jinja").unlink()
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = [
            {"name": "default", "template": CHAT_TEMPLATE},
            {"name": "tool_use", "template": TOOLS_CHAT_TEMPLATE},
        ]
        config_path.write_text(json.dumps(config))
    elif template == CONFIG_STRING:
        # As older transformers save it: the template in tokenizer_config.json, tokens as objects.
        with_chat_template(tiny_model_dir, model_dir, TOOLS_CHAT_TEMPLATE)
        (model_dir / "chat_template.jinja").unlink()
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = TOOLS_CHAT_TEMPLATE
        for name in ("bos_token", "eos_token"):
            config[name] = {"content": config[name], "special": True, "__type": "AddedToken"}
        config_path.write_text(json.dumps(config))
    else:
        with_chat_template(tiny_model_dir, model_dir, template)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        tokenize_examples(
            tokenizer, _examples(tool_rows(1)), max_length=1024, truncation_mode=TruncationMode.keep_start
        )
        trainer_ok = True
    except ToolsNotRendered:
        trainer_ok = False
    assert trainer_ok == (template in (TOOLS_CHAT_TEMPLATE, TOOL_USE_LIST, CONFIG_STRING))
    assert (tools_problem(str(model_dir)) is None) == trainer_ok


def test_the_control_plane_leaves_models_it_cannot_read_to_the_trainer() -> None:
    assert tools_problem("Qwen/Qwen2.5-0.5B-Instruct") is None
    assert tools_problem("s3://models/llama") is None
