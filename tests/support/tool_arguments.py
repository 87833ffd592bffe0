"""Arguments for any tool, drawn from its JSON input schema as the client lists it, most of them
then made hostile: a wrong type, a missing or unknown argument, huge or odd text, extreme numbers,
nested junk, no arguments. A new tool is fuzzed without a line here; a schema keyword the
generator does not know raises NoStrategy.

Also the fixed odd values of the sweep, each tried once in each argument of each tool, and the
hypothesis settings every fuzz run shares: derandomized, so every run draws the same calls.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from mcp_types import Tool

from tests.support.fuzz_servers import RUNTIMES, WAVE_PATHS, Drawn

# -- arguments from a tool's input schema ---------------------------------------------------------

# What the generator understands of JSON Schema; a schema using anything else has no strategy.
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "anyOf",
        "enum",
        "$ref",
        "$defs",
        "items",
        "properties",
        "required",
        "additionalProperties",
        "default",
        "title",
        "description",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)


class NoStrategy(Exception):
    """A tool's schema uses something the generator cannot draw from: teach it before fuzzing."""


JSON_LEAVES: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
JUNK: st.SearchStrategy[Any] = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

# The odd values of each kind of argument: every one is tried once for every argument of its
# name (the sweep), and they are mixed into the random draws.
TASK_ID_EDGES = ("0", "-1", "01", "1.0", " 1", "1e3", "\u0661", "999999999999999999", "9223372036854775808")
WORKER_ID_EDGES = (
    "mayor",
    "worker-0",
    "worker-01",
    "worker--1",
    "Worker-1",
    "worker-1 ",
    "worker-\u0661",
    "worker-\u00b2",
    "worker-" + "9" * 18,
    "worker-" + "9" * 19,
    "worker-" + "9" * 33,
)
PATTERN_EDGES = (
    *("src/a.py", "src/*.py", "src", "docs/**", "a[1].py", "[", "**", "../x", "src/../../x", "/etc/passwd"),
    *(".", "./", "", " ", "\0", "a\0b", "\u00e9/\u00fc.py", "x" * 1000),
)
RUNTIME_NAMES = (*RUNTIMES, "unknown", "")
# Metadata a task may really carry: a write scope (spawn checks overlaps) and safe validation.
METADATA_EDGES: tuple[dict[str, Any], ...] = (
    {"files": ["src/a.py"]},
    {"files": "src/*.py"},
    {"files": [1, 2]},
    {"files": ["../outside"]},
    {"validation": {"files_exist": ["mcp-swarm.toml"]}},
    {"validation": {"files_exist": ["absent.py"], "content_check": [{"file": "x", "pattern": "("}]}},
    {"validation": {"command": {"argv": ["true"]}}},
    {"validation": {"tests": {"argv": ["false"]}}},
    {"validation": "not an object"},
    {"ol_bead_id": "ol-9.1"},
)
TASK_ID = st.integers(1, 40).map(str) | st.sampled_from(TASK_ID_EDGES)
WORKER_ID = st.integers(1, 30).map(lambda n: f"worker-{n}") | st.sampled_from(WORKER_ID_EDGES)
PATTERN = st.text(max_size=12) | st.sampled_from(PATTERN_EDGES)
# Random keys never say "validation": its checks run commands.
METADATA: st.SearchStrategy[dict[str, Any]] = st.sampled_from(METADATA_EDGES) | st.dictionaries(
    st.text(max_size=10).filter(lambda key: key != "validation"), JUNK, max_size=4
)

# Values for parameters of these names (or "tool.name"), in place of what their type alone
# gives: ids that exist, runtimes that are configured, files that are there, short timeouts.
HINTS: Mapping[str, st.SearchStrategy[Any]] = {
    "taskId": TASK_ID,
    "taskIds": st.none() | st.lists(TASK_ID, max_size=4),
    "blockedBy": st.lists(TASK_ID | st.sampled_from(["k0", "k1", "k2"]), max_size=3),
    "addBlocks": st.lists(TASK_ID, max_size=3),
    "addBlockedBy": st.lists(TASK_ID, max_size=3),
    "key": st.sampled_from(["k0", "k1", "k2", "3", "\u0661"]) | st.text(min_size=1, max_size=5),
    "workerId": WORKER_ID,
    "workerIds": st.none() | st.lists(WORKER_ID, max_size=4),
    "to": WORKER_ID,
    "holder": st.none() | WORKER_ID,
    "runtime": st.none() | st.sampled_from(RUNTIME_NAMES),
    "metadata": st.none() | METADATA,
    "path": st.sampled_from(WAVE_PATHS),
    "patterns": st.lists(PATTERN, min_size=1, max_size=3),
    "maxWorkers": st.none() | st.integers(1, 6),
    "sinceId": st.integers(0, 60) | st.sampled_from([2**63 - 1]),
    "wait.timeoutSeconds": st.sampled_from([0, 0, 0.01, 0.05]),
    "timeoutSeconds": st.none() | st.sampled_from([0.05, 1.0, 60.0]),
}

HUGE_TEXT = (
    "x" * (1 << 20),
    "\u00e9" * (1 << 19),
    "\0" * 100_000,
    "\U0001f41d" * 50_000,
    "a\u0301" * 50_000,
    "\n" * 100_000,
)
ODD_TEXT = (
    "",
    " ",
    "\t\n",
    "\0",
    "a\0b",
    "\u202eevil",
    "\u200b",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "e\u0301\u0301\u0301",
    "\U0001f41d\U0001f41d",
    "\r\n\r\n",
    "null",
    "'; DROP TABLE tasks; --",
    "{{task_id}}",
    "%s%n",
)
EDGE_NUMBERS: tuple[object, ...] = (
    -1,
    0,
    -0.0,
    0.5,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    True,
    False,
)
UNKNOWN_KEYS = ("taskId", "workerId", "bogus", "", "__proto__", "status ", "\u00e9")


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise NoStrategy(f"a $ref the generator cannot follow: {ref!r}")
    return cast(Mapping[str, Any], defs[ref[len(prefix) :]])


def values_of(
    schema: Mapping[str, Any], defs: Mapping[str, Any], tool: str, name: str | None = None
) -> st.SearchStrategy[Any]:
    """A strategy of values that `schema` accepts (or nearly: hints name ids that may not exist)."""
    unknown = set(schema) - SCHEMA_KEYWORDS
    if unknown:
        raise NoStrategy(f"{tool}: schema keywords {sorted(unknown)} in {schema}")
    schema = _resolve(schema, defs)
    if name is not None and f"{tool}.{name}" in HINTS:
        return HINTS[f"{tool}.{name}"]
    if name is not None and name in HINTS:
        return HINTS[name]
    if "anyOf" in schema:
        return st.one_of([values_of(option, defs, tool) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        top = min(int(schema.get("maxLength", 40)), 40)
        return st.text(min_size=int(schema.get("minLength", 0)), max_size=top)
    if kind == "integer":
        low = int(schema.get("minimum", -1000))
        return st.integers(low, int(schema.get("maximum", low + 1000)))
    if kind == "number":
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", -1000.0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 1000.0)))
        return st.floats(
            low,
            high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = values_of(schema.get("items", {"type": "string"}), defs, tool)
        low = int(schema.get("minItems", 0))
        return st.lists(items, min_size=low, max_size=min(int(schema.get("maxItems", 4)), low + 4))
    if kind == "object":
        return _objects(schema, defs, tool)
    raise NoStrategy(f"{tool}: no strategy for the schema {schema}")


def _objects(schema: Mapping[str, Any], defs: Mapping[str, Any], tool: str) -> st.SearchStrategy[Any]:
    properties = cast(Mapping[str, Mapping[str, Any]], schema.get("properties", {}))
    if not properties:
        if schema.get("additionalProperties") is False:
            return st.just({})
        return st.dictionaries(st.text(max_size=8), JUNK, max_size=4)
    required = set(cast(list[str], schema.get("required", [])))
    drawn = {name: values_of(sub, defs, tool, name) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: value for name, value in drawn.items() if name in required},
        optional={name: value for name, value in drawn.items() if name not in required},
    )


# Whole values put in place of an argument; drawn by index, so a failing example prints short.
BULK: tuple[object, ...] = (
    [0] * 1001,
    ["1"] * 10_001,
    {str(n): n for n in range(10_000)},
    nested(60),
    nested(200),
)
REPLACEMENTS: Mapping[str, st.SearchStrategy[Any]] = {
    "wrong type": JUNK,
    "huge text": st.sampled_from(HUGE_TEXT),
    "odd text": st.sampled_from(ODD_TEXT) | st.text(min_size=1, max_size=30),
    "edge number": st.sampled_from(EDGE_NUMBERS),
    "bulk": st.sampled_from(BULK),
    "odd list": st.lists(st.sampled_from(ODD_TEXT), min_size=1, max_size=3),
}
MUTATIONS = ("missing", "unknown", "no arguments", *REPLACEMENTS)


@st.composite
def _arguments(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], names: tuple[str, ...]) -> Drawn:
    """Valid arguments, or (more often) valid ones with one hostile change."""
    arguments = draw(valid)
    if draw(st.integers(0, 9)) < 4:
        return Drawn(arguments)
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "no arguments":
        return Drawn(draw(st.sampled_from([None, {}])))
    if mutation == "unknown":
        return Drawn({**arguments, draw(st.sampled_from(UNKNOWN_KEYS)): draw(JUNK)})
    key = draw(st.sampled_from(sorted(set(arguments) | set(names)) or UNKNOWN_KEYS))
    if mutation == "missing":
        return Drawn({name: value for name, value in arguments.items() if name != key})
    return Drawn({**arguments, key: draw(REPLACEMENTS[mutation])})


@dataclass(frozen=True)
class Arguments:
    """Strategies of arguments for one tool: valid ones, and hostile variants of them."""

    tool: Tool

    @functools.cached_property
    def valid(self) -> st.SearchStrategy[dict[str, Any]]:
        schema = self.tool.input_schema
        defs = cast(Mapping[str, Any], schema.get("$defs", {}))
        return cast(st.SearchStrategy[dict[str, Any]], values_of(schema, defs, self.tool.name))

    @functools.cached_property
    def any(self) -> st.SearchStrategy[Drawn]:
        names = tuple(sorted(cast(Mapping[str, Any], self.tool.input_schema.get("properties", {}))))
        return _arguments(self.valid, names)


# -- the sweep: each odd value once in each argument ----------------------------------------------

# The values every argument gets once, whatever its type: the sweep's own corner of the fuzz.
SWEEP_VALUES: tuple[object, ...] = (
    None,
    "",
    "\0",
    "a\0b",
    "\u202eevil",
    "\U0010ffff",
    "x" * (1 << 20),
    -1,
    2**63,
    10**30,
    1e308,
    True,
    [0] * 1001,
    nested(200),
    {},
)


def _one_each(values: Sequence[object]) -> tuple[object, ...]:
    return tuple([value] for value in values)


# ... and those an argument of this name gets besides.
EDGES: Mapping[str, tuple[object, ...]] = {
    "taskId": TASK_ID_EDGES,
    "taskIds": _one_each(TASK_ID_EDGES),
    "blockedBy": _one_each(TASK_ID_EDGES),
    "addBlocks": _one_each(TASK_ID_EDGES),
    "addBlockedBy": _one_each(TASK_ID_EDGES),
    "workerId": WORKER_ID_EDGES,
    "workerIds": _one_each(WORKER_ID_EDGES),
    "to": WORKER_ID_EDGES,
    "holder": WORKER_ID_EDGES,
    "patterns": _one_each(PATTERN_EDGES),
    "path": WAVE_PATHS,
    "runtime": RUNTIME_NAMES,
    "metadata": METADATA_EDGES,
    "sinceId": (2**63 - 1,),
}
# The valid value the sweep gives an argument it is not trying, where its type alone says too little.
SIMPLEST: Mapping[str, object] = {
    "taskId": "1",
    "workerId": "worker-1",
    "to": "worker-1",
    "patterns": ["src/a.py"],
    "path": "wave.json",
}


def simplest(schema: Mapping[str, Any], defs: Mapping[str, Any], name: str | None = None) -> Any:
    """The plainest value `schema` accepts: required properties only, minimum sizes."""
    schema = _resolve(schema, defs)
    if name is not None and name in SIMPLEST:
        return SIMPLEST[name]
    if "anyOf" in schema:
        return simplest(schema["anyOf"][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 0)))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "array":
        return [simplest(schema.get("items", {"type": "string"}), defs)] * int(schema.get("minItems", 0))
    if kind == "object":
        properties = cast(Mapping[str, Mapping[str, Any]], schema.get("properties", {}))
        required = cast(list[str], schema.get("required", []))
        return {key: simplest(properties[key], defs, key) for key in required}
    return {"boolean": False, "null": None}.get(str(kind))


def strategies_for(tools: Sequence[Tool]) -> dict[str, Arguments]:
    """A strategy for every tool; NoStrategy if a schema uses what the generator does not know."""
    found: dict[str, Arguments] = {}
    for tool in tools:
        arguments = Arguments(tool)
        arguments.valid  # noqa: B018 - building it checks every keyword of the schema
        found[tool.name] = arguments
    return found


FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    # One bug, reported as soon as it is found: each message names the call and its arguments.
    report_multiple_bugs=False,
)
