"""`alignd.contract.templates`: what eval templates reference and how they render."""

import pytest

from alignd.contract.templates import Reference, TemplateError, references, references_in, render


def test_references_name_namespace_and_path_in_order() -> None:
    found = references("Q: {{item.prompt}} A: {{ sample.output_text }} {{item.messages.0.content}}")
    assert found == [
        Reference("item", ("prompt",)),
        Reference("sample", ("output_text",)),
        Reference("item", ("messages", "0", "content")),
    ]
    assert [r.field for r in found] == ["prompt", "output_text", "messages"]
    assert str(found[2]) == "item.messages.0.content"


def test_references_in_lists_each_reference_once() -> None:
    found = references_in(["{{item.a}} {{item.b}}", "{{item.a}}", "no placeholders"])
    assert [str(r) for r in found] == ["item.a", "item.b"]


@pytest.mark.parametrize(
    "template", ["{{prompt}}", "{{items.prompt}}", "{{item}}", "{{item.}}", "{{ item.a b }}"]
)
def test_a_placeholder_outside_item_and_sample_is_refused(template: str) -> None:
    with pytest.raises(TemplateError, match="invalid template variable"):
        references(template)


def test_render_fills_strings_verbatim_and_other_values_as_json() -> None:
    item = {"prompt": "Name a fruit.", "n": 3, "tags": ["a", "b"], "messages": [{"content": "hi"}]}
    text = render(
        "{{item.prompt}} {{item.n}} {{item.tags}} {{item.messages.0.content}} -> {{sample.output_text}}",
        item=item,
        sample={"output_text": "apple"},
    )
    assert text == 'Name a fruit. 3 ["a","b"] hi -> apple'


def test_render_keeps_text_outside_placeholders_and_single_braces() -> None:
    assert render("{a} {{item.x}} }}", item={"x": "1"}) == "{a} 1 }}"


def test_rendering_a_missing_field_names_it() -> None:
    with pytest.raises(TemplateError, match=r"item\.answer is missing"):
        render("{{item.answer}}", item={"prompt": "x"})
    with pytest.raises(TemplateError, match=r"item\.messages\.5 is missing"):
        render("{{item.messages.5.content}}", item={"messages": []})
    with pytest.raises(TemplateError, match="there is no sample"):
        render("{{sample.output_text}}", item={})
