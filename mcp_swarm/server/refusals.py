"""Refused arguments, said in plain sentences: what was wrong, where, and what is allowed.

The SDK reports arguments that fail their schema with pydantic's own dump (a title, a line per
error with its type and input, a URL to pydantic's documentation), which an agent or a person must
decode. Here each problem becomes one sentence that names the parameter, as a caller spells it
(`tasks[2].subject`), and the values it may take: `status must be one of pending, in_progress,
completed, failed, deleted; got "done".`
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# Problems named in one refusal: a list of ten thousand wrong items is one mistake, not a
# ten-thousand-line message (two megabytes, measured) for an agent to read.
MAX_REPORTED_ERRORS = 10
# A rejected value is quoted this far at most: it is the caller's own, only a reminder.
MAX_QUOTED_CHARS = 40

_KINDS = {
    "string_type": "a string",
    "string_unicode": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "greater than or equal to"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "less than or equal to"),
}


def refusal(exc: ValidationError, schema: dict[str, Any] | None = None, tool: str | None = None) -> str:
    """The problems of `exc` as sentences, at most MAX_REPORTED_ERRORS of them.

    `schema` (the tool's input schema) lets an unknown parameter be answered with the known ones.
    """
    errors = exc.errors(include_url=False)
    sentences: list[str] = []
    seen: set[str] = set()
    for error in errors:
        sentence = _sentence(error, schema, tool)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    if len(sentences) > MAX_REPORTED_ERRORS:
        more, total = len(sentences) - MAX_REPORTED_ERRORS, len(sentences)
        shown = f"These are the first {MAX_REPORTED_ERRORS}, "
        shown += f"and {more} more errors ({total} in all) are not shown."
        sentences = [*sentences[:MAX_REPORTED_ERRORS], shown]
    return " ".join(sentences)


def where(loc: Sequence[int | str]) -> str:
    """A location as a caller writes it: `tasks[2].subject`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "the arguments"


def _sentence(error: ErrorDetails, schema: dict[str, Any] | None, tool: str | None) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    name = where(loc)
    got = f"got {_quoted(error['input'])}"
    if kind == "missing":
        return f"{name} is required."
    if kind == "extra_forbidden":
        known = _known_names(schema, loc[:-1])
        owner = f" of {tool}" if tool and len(loc) == 1 else ""
        if known:
            allowed = f"; the known ones are {', '.join(known)}"
        else:
            allowed = "; it takes none" if owner and schema is not None else ""
        return f"{name} is not a parameter{owner}{allowed}."
    if kind in ("enum", "literal_error"):
        allowed = ", ".join(re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", ""))))
        return f"{name} must be one of {allowed}; {got}."
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}, {got}."
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{name} must be {words} {_number(ctx.get(key))}, {got}."
    if kind == "string_too_short":
        least = int(ctx.get("min_length", 1))
        return (
            f"{name} must not be empty." if least == 1 else f"{name} must have at least {least} characters."
        )
    if kind == "string_too_long":
        return f"{name} must have at most {ctx.get('max_length')} characters, got {len(str(error['input']))}."
    if kind == "too_short":
        return f"{name} must have at least {_items(ctx.get('min_length'))}, got {ctx.get('actual_length')}."
    if kind == "too_long":
        return f"{name} must have at most {_items(ctx.get('max_length'))}, got {ctx.get('actual_length')}."
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{name} {message.rstrip('.')}."


def _quoted(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _items(count: Any) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _known_names(schema: dict[str, Any] | None, loc: Sequence[int | str]) -> list[str]:
    """The property names the schema allows at `loc`, or none where it cannot be followed."""
    if schema is None:
        return []
    node: dict[str, Any] | None = schema
    for part in loc:
        node = _object_or_array(schema, node)
        if node is None:
            return []
        node = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
    node = _object_or_array(schema, node)
    return sorted(node.get("properties", {})) if node is not None else []


def _object_or_array(root: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any] | None:
    """`node` with its $ref followed and, of a union (`X | None`), the branch that is not null."""
    for _ in range(10):  # a schema's references are few levels deep; never loop forever
        if node is None:
            return None
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            node = root.get("$defs", {}).get(name)
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            node = branches[0] if len(branches) == 1 else None
        else:
            return node
    return None
