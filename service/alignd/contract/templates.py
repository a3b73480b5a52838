"""Eval templates: `{{item.field}}` and `{{sample.output_text}}` in prompts and grader inputs.

The control plane parses them when an eval or a run is created, so a template naming a field the items do
not have is refused then, with the field named; the evaluator renders them for each item. Both import
this module, so what is accepted at creation is exactly what renders at run time.

Syntax (OpenAI's): `{{ namespace.path }}` with optional spaces inside the braces; `namespace` is `item`
(the data source row) or `sample` (what the model generated for it); `path` is one or more keys joined
by dots, digits indexing into lists (`{{item.messages.0.content}}`). Strings render as they are; any
other value (numbers, lists, objects) renders as compact JSON. Text outside `{{...}}` is kept verbatim.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Namespace = Literal["item", "sample"]
NAMESPACES: tuple[Namespace, ...] = ("item", "sample")

SAMPLE_FIELDS = ("output_text",)
"""What a generated sample offers to templates: the reply's text."""

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"^(item|sample)((?:\.[A-Za-z0-9_\-]+)+)$")


class TemplateError(ValueError):
    """A template that cannot be parsed, or cannot be rendered for an item; the message says which field."""


@dataclass(frozen=True)
class Reference:
    """One `{{namespace.path}}` of a template."""

    namespace: Namespace
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join((self.namespace, *self.path))

    @property
    def field(self) -> str:
        """The top-level key it reads (`prompt` for `{{item.prompt.0}}`)."""
        return self.path[0]


def references(template: str) -> list[Reference]:
    """Every placeholder of `template`, in order; TemplateError for one that is not `item.` or `sample.`
    followed by a dotted path."""
    found = []
    for match in _PLACEHOLDER.finditer(template):
        found.append(_parse(match.group(1)))
    return found


def references_in(templates: Iterable[str]) -> list[Reference]:
    """`references` of several templates, each reference once, in order of first appearance."""
    seen: dict[str, Reference] = {}
    for template in templates:
        for reference in references(template):
            seen.setdefault(str(reference), reference)
    return list(seen.values())


def _parse(expression: str) -> Reference:
    match = _PATH.match(expression)
    if match is None:
        raise TemplateError(
            f"invalid template variable {{{{{expression}}}}}: use {{{{item.<field>}}}} or "
            "{{sample.output_text}}"
        )
    namespace: Namespace = "item" if match.group(1) == "item" else "sample"
    return Reference(namespace=namespace, path=tuple(match.group(2)[1:].split(".")))


def render(template: str, *, item: Mapping[str, Any], sample: Mapping[str, Any] | None = None) -> str:
    """`template` with each placeholder replaced by the value it names; TemplateError naming the
    reference when the item (or sample) has no such value."""
    namespaces: dict[str, Mapping[str, Any] | None] = {"item": item, "sample": sample}

    def substitute(match: re.Match[str]) -> str:
        reference = _parse(match.group(1))
        return _text(lookup(reference, namespaces[reference.namespace]))

    return _PLACEHOLDER.sub(substitute, template)


def lookup(reference: Reference, root: Mapping[str, Any] | None) -> Any:
    """The value `reference` names inside `root` (the item or the sample)."""
    if root is None:
        raise TemplateError(f"{{{{{reference}}}}}: there is no {reference.namespace} here")
    value: Any = root
    for depth, key in enumerate(reference.path):
        where = ".".join((reference.namespace, *reference.path[: depth + 1]))
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"{{{{{reference}}}}}: {where} is missing")
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
