"""At job creation: refuse rows with tools when the base model's chat template cannot render tools.

A template that ignores `tools` (most templates written before function calling) would train on
prompts without the tool definitions the rows were written for, silently. The trainer refuses that
too (`alignd_trainer.data.check_renders_tools`), but only after a launch; here the user gets a 400
naming the model and the first row with tools, before any GPU time is spent.

The server has no transformers, so it reads the template the way transformers does from a model
directory (`chat_template.jinja`, `additional_chat_templates/`, or `tokenizer_config.json`) and renders
the shared probe (`contract.tools.PROBE_TOOL`) with jinja2 in transformers' sandboxed environment
(same options, filters and globals). Models the server cannot read (hub ids, s3:// prefixes) are left to
the trainer's check.
"""

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from alignd.contract.tools import PROBE_MESSAGES, PROBE_TOOL, renders_probe
from alignd.errors import InvalidRequest
from alignd.models import FileModel

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def check_tools_rendered(*, model: str, location: str, files: Sequence[tuple[str, FileModel]]) -> None:
    """InvalidRequest when a file's rows use tools and `model`'s chat template, read from `location`,
    cannot render them. `files` are (request parameter, file) in the order to search for the first row."""
    first = _first_tools_row(files)
    if first is None:
        return
    problem = tools_problem(location)
    if problem is None:
        return
    param, file, line = first
    raise InvalidRequest(
        f"model {model!r} cannot train on {param} {file.id}: line {line} uses tools (input.tools or "
        f"tool_calls), but the model's chat template {problem}. Pick a base model whose chat template "
        "renders tools (Qwen2.5, Llama 3.1 and later, Mistral's instruct models), or remove the tools "
        "from the rows",
        param="model",
        code="tools_not_supported",
    )


def _first_tools_row(files: Sequence[tuple[str, FileModel]]) -> tuple[str, FileModel, int] | None:
    for param, file in files:
        lines = ((file.report or {}).get("tools") or {}).get("example_lines") or []
        if lines:
            return param, file, int(lines[0])
    return None


def tools_problem(location: str) -> str | None:
    """Why the chat template of the model directory at `location` cannot render tools, or None when it
    can or when the server cannot read it (the trainer checks those)."""
    directory = Path(location)
    if not location.startswith("/") or not directory.is_dir():
        return None
    config = _json(directory / "tokenizer_config.json")
    template = _tools_template(directory, config)
    if template is None:
        return "is missing (the tokenizer has no chat template)"
    tokens = {name: _token(config.get(name)) for name in SPECIAL_TOKENS}
    try:
        rendered = (
            _environment()
            .from_string(template)
            .render(
                messages=PROBE_MESSAGES,
                tools=[PROBE_TOOL],
                add_generation_prompt=True,
                **{name: value for name, value in tokens.items() if value is not None},
            )
        )
    except Exception as exc:  # any template error means the same: it cannot render tools
        return f"raises {type(exc).__name__} when given tools: {exc}"
    return None if renders_probe(rendered) else "leaves tool definitions, calls or answers out"


def _tools_template(directory: Path, config: dict[str, Any]) -> str | None:
    """The template transformers uses when tools are passed: the one named `tool_use` if the model has
    several, else the default one."""
    named: dict[str, str] = {}
    extra = directory / "additional_chat_templates"
    if extra.is_dir():
        named = {path.stem: path.read_text() for path in sorted(extra.glob("*.jinja"))}
    default_file = directory / "chat_template.jinja"
    default: str | None = default_file.read_text() if default_file.is_file() else None
    source = config.get("chat_template")
    if isinstance(source, str) and default is None:
        default = source
    elif isinstance(source, list):
        for entry in source:
            if isinstance(entry, dict) and isinstance(entry.get("template"), str):
                named.setdefault(str(entry.get("name")), entry["template"])
    if "tool_use" in named:
        return named["tool_use"]
    return default if default is not None else named.get("default")


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string, or an AddedToken's dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`, which transformers' templates may use to mark assistant
    tokens; rendered as its body."""

    tags = {"generation"}  # noqa: RUF012  # jinja's Extension API declares it as a class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    """transformers' `tojson`: no HTML escaping, and json.dumps's options."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment
