"""A task's validation checks: the evidence that a worker's "done" is true.

`metadata.validation` of a task may hold:

    {"files_exist": ["src/auth.py"],
     "content_check": [{"file": "src/auth.py", "pattern": "def login"}],
     "tests": {"argv": ["pytest", "-q", "tests/test_auth.py"], "timeoutSeconds": 300},
     "command": {"argv": ["ruff", "check", "src"]}}

Commands are argument lists run without a shell, in the worker's directory, with a time limit.
Paths must stay inside that directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from mcp_swarm.processes import ProcessStartError, start_process
from mcp_swarm.runtimes.base import as_array, as_object

DEFAULT_CHECK_TIMEOUT = 300.0
_OUTPUT_TAIL = 2000


def _inside(root: Path, relative: str) -> Path | None:
    """The path `relative` names under `root`, or None if it leads outside (.., absolute, links)."""
    candidate = (root / relative).resolve()
    root = root.resolve()
    return candidate if candidate == root or root in candidate.parents else None


async def run_checks(
    validation: Mapping[str, Any], cwd: Path, env: Mapping[str, str], log_dir: Path
) -> dict[str, Any]:
    """Run every check; the answer is {"passed": bool, "checks": [{check, passed, detail?}]}."""
    results: list[dict[str, Any]] = []

    def record(check: str, passed: bool, detail: str | None = None) -> None:
        result: dict[str, Any] = {"check": check, "passed": passed}
        if detail:
            result["detail"] = detail
        results.append(result)

    for name in as_array(validation.get("files_exist")):
        path = _inside(cwd, str(name))
        if path is None:
            record(f"files_exist {name}", False, "the path leads outside the worker's directory")
        else:
            record(f"files_exist {name}", path.exists(), None if path.exists() else "missing")

    for item in as_array(validation.get("content_check")):
        spec = as_object(item) or {}
        name, pattern = str(spec.get("file", "")), str(spec.get("pattern", ""))
        path = _inside(cwd, name)
        if path is None or not path.is_file():
            record(f"content_check {name}", False, "no such file inside the worker's directory")
            continue
        try:
            found = re.search(pattern, path.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        except re.error as exc:
            record(f"content_check {name}", False, f"bad pattern: {exc}")
            continue
        record(f"content_check {name}", found is not None, None if found else f"no match for {pattern!r}")

    for kind in ("tests", "command"):
        spec = validation.get(kind)
        if spec is None:
            continue
        record(*await _run_command(kind, spec, cwd, env, log_dir / f"{kind}.log"))

    return {"passed": all(result["passed"] for result in results), "checks": results}


async def _run_command(
    kind: str, spec: Any, cwd: Path, env: Mapping[str, str], log: Path
) -> tuple[str, bool, str | None]:
    obj = as_object(spec)
    argv = as_array(obj.get("argv") if obj is not None else spec)
    timeout = obj.get("timeoutSeconds", DEFAULT_CHECK_TIMEOUT) if obj is not None else DEFAULT_CHECK_TIMEOUT
    if not argv or not all(isinstance(arg, str) for arg in argv):
        return kind, False, 'needs an argument list of strings, such as ["pytest", "-q"]'
    if not isinstance(timeout, int | float) or timeout <= 0:
        return kind, False, "timeoutSeconds must be a positive number"
    label = f"{kind} {' '.join(argv)}"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        process = await start_process([str(arg) for arg in argv], cwd=cwd, env=env, output=log)
    except ProcessStartError as exc:
        return label, False, str(exc)
    code: int | None = None
    with anyio.move_on_after(float(timeout)):
        code = await process.wait()
    if code is None:
        await process.stop()
        return label, False, f"timed out after {timeout} s; output in {log}"
    if code == 0:
        return label, True, None
    text = await anyio.Path(log).read_text(encoding="utf-8", errors="replace")
    tail = text[-_OUTPUT_TAIL:].strip()
    return label, False, f"exit status {code}: {tail}"
