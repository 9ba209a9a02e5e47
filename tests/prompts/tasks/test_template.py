"""Templates are untrusted input: only plain {field} placeholders, bounded output."""

from __future__ import annotations

import pytest

from spp.prompts.tasks import (
    MAX_FORMATTED_CHARS,
    MAX_TEMPLATE_CHARS,
    FormattedTooLongError,
    TaskInputError,
    TaskSpec,
    TemplateError,
    get_task,
    parse_template,
    task_names,
)
from spp.prompts.tasks.spec import render_template

HOSTILE = {
    "{review:>300000000}": "conversion or format spec",
    "{review!r}": "conversion or format spec",
    "{review!s:10}": "conversion or format spec",
    "{review:{width}}": "conversion or format spec",
    "{review.__class__}": "not a plain {field}",
    "{review.__init__.__globals__}": "not a plain {field}",
    "{review[0]}": "not a plain {field}",
    "{}": "not a plain {field}",
    "{0}": "not a plain {field}",
    "{review": "malformed",
    "review}": "malformed",
}


@pytest.mark.parametrize(("template", "reason"), HOSTILE.items())
def test_hostile_templates_are_refused_with_the_placeholder_named(template: str, reason: str) -> None:
    with pytest.raises(TemplateError, match="template") as info:
        parse_template(template)
    message = str(info.value)
    assert reason in message and "\n" not in message
    with pytest.raises(TemplateError):
        TaskSpec(name="t", template=template, label_words=("a", "b"))


def test_a_spec_file_with_a_hostile_template_is_refused(tmp_path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"name": "t", "template": "{review:>300000000}", "label_words": ["a", "b"]}')
    with pytest.raises(TemplateError, match=r"task spec file .*\{review:>300000000\}"):
        get_task(str(path))


def test_template_length_is_bounded() -> None:
    parse_template("x" * (MAX_TEMPLATE_CHARS - 3) + "{a}")
    with pytest.raises(TemplateError, match=f"maximum is {MAX_TEMPLATE_CHARS}"):
        parse_template("x" * (MAX_TEMPLATE_CHARS - 2) + "{a}")


def test_plain_fields_and_escaped_braces_render() -> None:
    spec = TaskSpec(name="t", template="{{literal}} q: {question} {question} a: {answer}", label_words=("a", "b"))
    assert spec.fields == ("question", "answer")
    assert spec.format({"question": "why\n now", "answer": 3}) == "{literal} q: why now why now a: 3"


@pytest.mark.parametrize("task", task_names())
def test_catalog_templates_render_as_str_format_did(task: str) -> None:
    spec = get_task(task)
    values = {f: f"value of {f}" for f in spec.fields}
    assert spec.format(values) == spec.template.format(**values)


def test_the_rendered_length_is_checked_before_the_text_is_built() -> None:
    pieces = parse_template("ab{x}{x}")
    assert render_template(pieces, {"x": "1234"}, limit=10) == "ab12341234"
    with pytest.raises(FormattedTooLongError, match="would be 12 characters; the limit is 10"):
        render_template(pieces, {"x": "12345"}, limit=10)


def test_format_refuses_past_the_default_maximum() -> None:
    spec = TaskSpec(name="t", template="{a} {a}", label_words=("x", "y"))
    half = "z" * (MAX_FORMATTED_CHARS // 2)
    with pytest.raises(FormattedTooLongError, match=f"task t: .* the limit is {MAX_FORMATTED_CHARS}"):
        spec.format({"a": half})
    assert isinstance(FormattedTooLongError("x"), TaskInputError)  # a client's input: 4xx, never 5xx
    assert len(spec.format({"a": half[:-1]})) == MAX_FORMATTED_CHARS - 1
