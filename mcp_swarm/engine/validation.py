"""A task's validation checks: the evidence that a worker's "done" is true.

`metadata.validation` of a task may hold:

    {"files_exist": ["src/auth.py"],
     "content_check": [{"file": "src/auth.py", "pattern": "def login"}],
     "tests": {"argv": ["pytest", "-q", "tests/test_auth.py"], "timeoutSeconds": 300},
     "command": {"argv": ["ruff", "check", "src"]}}

Commands are argument lists run without a shell, in the worker's directory, with a time limit,
in the environment of the worker's allow-list. Paths must stay inside that directory. A check
that cannot be done (a path outside, a bad argument list) fails with the reason; nothing in the
metadata can make the checks raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from mcp_swarm.placement.processes import ProcessStartError
from mcp_swarm.placement.wrapped import start_wrapped_process
from mcp_swarm.runtimes.base import as_array, as_object
from mcp_swarm.workspace.paths import inside, without_links

DEFAULT_CHECK_TIMEOUT = 300.0
_OUTPUT_TAIL = 2000
_OUTSIDE = "the path leads outside the worker's directory (or is no file name)"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


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
        path = inside(cwd, str(name))
        if path is None:
            record(f"files_exist {name}", False, _OUTSIDE)
        else:
            found = _exists(path)
            record(f"files_exist {name}", found, None if found else "missing")

    for item in as_array(validation.get("content_check")):
        spec = as_object(item) or {}
        name, pattern = str(spec.get("file", "")), str(spec.get("pattern", ""))
        path = inside(cwd, name)
        if path is None:
            record(f"content_check {name}", False, _OUTSIDE)
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            record(f"content_check {name}", False, "missing")
            continue
        except OSError as exc:
            record(f"content_check {name}", False, f"cannot read it: {exc.strerror or exc}")
            continue
        try:
            found = re.search(pattern, text, re.MULTILINE)
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
    # A bool is an int to Python, and infinity would be no time limit at all.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        return kind, False, "timeoutSeconds must be a positive number"
    label = f"{kind} {' '.join(argv)}"
    # The worker may write where this log lies (the state directory is in its project) and plant a
    # link there: the check's output would then be appended to a file of its choosing, anywhere.
    # The state directory's own path is resolved by the settings, so any link on the way is planted.
    if not without_links(log, Path(log.anchor)):
        return label, False, f"not run: its log {log} is reached through a symbolic link"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        # A fresh file: a hard link planted at its name would be a file anywhere, appended to.
        await anyio.Path(log).unlink(missing_ok=True)
        # Under the worker wrapper, which stops whatever the command leaves running when it exits
        # (a server it started for its tests, say), even a process that left its session.
        status = log.with_suffix(".status")
        await anyio.Path(status).unlink(missing_ok=True)
        process = await start_wrapped_process(
            [str(arg) for arg in argv], cwd=cwd, env=env, output=log, status=status
        )
    except (ProcessStartError, OSError) as exc:
        return label, False, str(exc)
    except ValueError as exc:  # a NUL byte in an argument
        return label, False, f"cannot start it: {exc}"
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
