"""Random sessions of the Mayor: a state machine of mostly valid calls, each run on a fresh project.

Tasks, plans and dependencies (some closing a cycle), deletions, spawns of real workers, wait,
close_agent, send_input, mail, reservations, a worker's reports through its own server, imports,
integrate: every call is judged as in test_fuzz_tools.py, and after every step the database must
keep its invariants (tests/support/invariants.py); once the server has stopped, no worker of it may
be left live. Hypothesis is derandomized: every run draws the same calls (what real workers do
with them still varies).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.fuzz_servers import ErrorLog, Served, running_mayor, running_worker, text_of
from tests.support.invariants import assert_ledger_sound
from tests.support.tool_arguments import FUZZ_SETTINGS, METADATA

pytestmark = [pytest.mark.slow, pytest.mark.tmux]

P = ParamSpec("P")
R = TypeVar("R")


# -- random sessions of mostly valid calls --------------------------------------------------------

STATUSES = ("pending", "in_progress", "completed", "failed")
PATTERNS = ("src/a.py", "src/*.py", "docs", "README.md")
# Which task or worker a rule takes: an index, modulo how many there are.
PICKS = 64
PICK = st.integers(0, PICKS - 1)
# What a worker does through its own server, in the order a worker might.
WORKER_CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("report_progress", {"message": "Halfway\nparser done"}),
    ("ask_for_help", {"subject": "Which format?", "body": "TOML or YAML"}),
    ("reserve_files", {"patterns": ["src/a.py"], "ttlSeconds": 60}),
    ("reserve_files", {"patterns": ["docs"], "exclusive": False}),
    ("release_files", {}),
    ("fetch_inbox", {"unreadOnly": True}),
    ("send_message", {"subject": "FYI", "type": "info"}),
    ("report_result", {"status": "done", "summary": "Wrote parser.py"}),
)


@dataclass
class Lab:
    """What every run of the state machine shares: the event loop, the error log, a directory."""

    portal: BlockingPortal
    errors: ErrorLog
    root: Path
    runs: int = 0
    answers: Counter[tuple[str, bool]] = field(default_factory=Counter[tuple[str, bool]])
    failures: list[AssertionError] = field(default_factory=list[AssertionError])

    def mayor(self) -> contextlib.AbstractContextManager[Served]:
        self.runs += 1
        return running_mayor(self.portal, self.root / f"run-{self.runs}", self.errors)


def noted(step: Callable[Concatenate[Swarming, P], R]) -> Callable[Concatenate[Swarming, P], R]:
    """Keep a run's first failure: hypothesis replays a failing run to report it, and if the
    replay goes otherwise (workers are real processes, their timing varies), it reports only that
    the replay went otherwise, not why the run failed."""

    @functools.wraps(step)
    def noting(machine: Swarming, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(machine, *args, **kwargs)
        except AssertionError as failure:
            machine.lab.failures.append(failure)
            raise

    return noting


class Swarming(RuleBasedStateMachine):
    """A Mayor's session of mostly valid calls on a fresh project, with a little model of the plan.

    The model knows which tasks exist, which are deleted and which dependencies hold, which is
    enough to say which dependency must be refused as a cycle and which must be accepted; what
    workers do to statuses happens behind its back and is left to the invariants.

    Tasks and workers are picked by index (modulo how many there are), not from bundles: what the
    server answers (how many workers a spawn started, say) depends on timing, and hypothesis must
    draw the same way whenever it replays a run.
    """

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self._session = lab.mayor()
        self.mayor = self._session.__enter__()
        self.tasks: list[str] = []
        self.workers: list[str] = []
        self.imports = 0
        self.deleted: set[str] = set()
        self.edges: set[tuple[str, str]] = set()  # (waiter, blocker)

    @noted
    def teardown(self) -> None:
        self.lab.answers.update(self.mayor.answers)
        self._session.__exit__(None, None, None)
        assert_ledger_sound(self.mayor.db, quiescent=True)

    @invariant()
    @noted
    def sound(self) -> None:
        assert_ledger_sound(self.mayor.db)

    def task(self, index: int) -> str:
        return self.tasks[index % len(self.tasks)]

    def worker(self, index: int) -> str | None:
        return self.workers[index % len(self.workers)] if self.workers else None

    def created(self, ids: Sequence[str], edges: set[tuple[str, str]]) -> None:
        self.tasks += ids
        self.edges |= edges

    def _waits_for(self, start: str, target: str) -> bool:
        """Whether `start` waits for `target` through dependencies on tasks that are not deleted."""
        seen, todo = {start}, [start]
        while todo:
            task = todo.pop()
            for waiter, blocker in self.edges:
                if waiter == task and blocker not in self.deleted and blocker not in seen:
                    if blocker == target:
                        return True
                    seen.add(blocker)
                    todo.append(blocker)
        return False

    @initialize()
    @noted
    def plan(self) -> None:
        """A small plan to start from, so that every rule has tasks to pick and workers come early."""
        plan = [
            {"key": "a", "subject": "A"},
            {"key": "b", "subject": "B", "blockedBy": ["a"]},
            {"subject": "C"},
        ]
        ids = self.mayor.ok("TaskCreatePlan", tasks=plan)["ids"]
        self.created(ids, {(ids[1], ids[0])})

    # -- the plan

    @rule(
        subject=st.text(min_size=1, max_size=30).filter(str.strip),
        picks=st.lists(PICK, max_size=3),
        metadata=METADATA,
    )
    @noted
    def create(self, subject: str, picks: list[int], metadata: dict[str, Any]) -> None:
        blockers = sorted({self.task(pick) for pick in picks})
        arguments = {"subject": subject, "description": "", "blockedBy": blockers, "metadata": metadata}
        result = self.mayor.call("TaskCreate", arguments)
        if self.deleted & set(blockers):
            assert result.is_error, text_of(result)
            return
        assert not result.is_error, text_of(result)
        task = json.loads(text_of(result))["id"]
        self.created([task], {(task, blocker) for blocker in blockers})

    @rule(size=st.integers(1, 5), picks=st.lists(st.lists(PICK, max_size=2), min_size=5, max_size=5))
    @noted
    def create_plan(self, size: int, picks: list[list[int]]) -> None:
        """A plan whose tasks wait for each other (even in a cycle, or on themselves) and for tasks."""
        keys = [f"k{n}" for n in range(size)]
        # Low picks name a task of the plan, high ones a task that exists.
        blockers = {
            key: [keys[pick % size] if pick < PICKS // 2 else self.task(pick) for pick in key_picks]
            for key, key_picks in zip(keys, picks, strict=False)
        }
        plan = [
            {"key": key, "subject": f"plan task {key}", "blockedBy": refs} for key, refs in blockers.items()
        ]
        result = self.mayor.call("TaskCreatePlan", {"tasks": plan})
        local = {(key, ref) for key, refs in blockers.items() for ref in refs if ref in keys}
        self_dependent = any(waiter == blocker for waiter, blocker in local)
        cyclic = _has_cycle(local)
        dangling = {ref for refs in blockers.values() for ref in refs} & self.deleted
        if self_dependent or cyclic or dangling:
            assert result.is_error, f"{plan}: {text_of(result)}"
            if cyclic and not self_dependent:
                assert "cycle" in text_of(result), text_of(result)
            return
        assert not result.is_error, f"{plan}: {text_of(result)}"
        ids = cast(dict[str, str], json.loads(text_of(result))["keys"])
        self.created(
            list(ids.values()),
            {(ids[key], ids.get(ref, ref)) for key, refs in blockers.items() for ref in refs},
        )

    @rule(waiter=PICK, blocker=PICK, through_blocks=st.booleans())
    @noted
    def depend(self, waiter: int, blocker: int, through_blocks: bool) -> None:
        late, early = self.task(waiter), self.task(blocker)
        if through_blocks:
            result = self.mayor.call("TaskUpdate", {"taskId": early, "addBlocks": [late]})
        else:
            result = self.mayor.call("TaskUpdate", {"taskId": late, "addBlockedBy": [early]})
        message = text_of(result)
        if {late, early} & self.deleted or late == early:
            assert result.is_error, message
        elif self._waits_for(early, late):
            assert result.is_error, f"{late} after {early} closes a cycle: {message}"
            assert "cycle" in message, message
        else:
            assert not result.is_error, f"{late} after {early}: {message}"
            self.edges.add((late, early))

    @rule(pick=PICK, status=st.sampled_from(STATUSES), owner=st.sampled_from([None, "", "me", "worker-1"]))
    @noted
    def set_status(self, pick: int, status: str, owner: str | None) -> None:
        task = self.task(pick)
        arguments: dict[str, Any] = {"taskId": task, "status": status}
        if owner is not None:
            arguments["owner"] = owner
        result = self.mayor.call("TaskUpdate", arguments)
        if task in self.deleted:
            assert result.is_error, text_of(result)

    @rule(pick=PICK)
    @noted
    def delete(self, pick: int) -> None:
        task = self.task(pick)
        result = self.mayor.call("TaskUpdate", {"taskId": task, "status": "deleted"})
        assert result.is_error is (task in self.deleted), text_of(result)
        self.deleted.add(task)

    @rule(pick=PICK, patch=METADATA)
    @noted
    def annotate(self, pick: int, patch: dict[str, Any]) -> None:
        self.mayor.call("TaskUpdate", {"taskId": self.task(pick), "metadata": patch, "subject": "renamed"})

    @rule(pick=PICK, ready=st.sampled_from([None, True, False]))
    @noted
    def look(self, pick: int, ready: bool | None) -> None:
        task = self.task(pick)
        result = self.mayor.call("TaskGet", {"taskId": task})
        assert result.is_error is (task in self.deleted), text_of(result)
        self.mayor.ok("TaskList", **({} if ready is None else {"ready": ready}))

    # -- workers

    @rule(
        picks=st.none() | st.lists(PICK, min_size=1, max_size=3),
        runtime=st.sampled_from(["quick", "quick", "slow", "slow", "fails", "missing"]),
        max_workers=st.none() | st.integers(1, 4),
        isolation=st.sampled_from(["shared", "shared", "shared", "worktree"]),
        mode=st.sampled_from(["local"] * 7 + ["distributed"]),
    )
    @noted
    def spawn(
        self, picks: list[int] | None, runtime: str, max_workers: int | None, isolation: str, mode: str
    ) -> None:
        arguments: dict[str, Any] = {"runtime": runtime, "isolation": isolation, "mode": mode}
        chosen = None if picks is None else sorted({self.task(pick) for pick in picks})
        if chosen is not None:
            arguments["taskIds"] = chosen
        if max_workers is not None:
            arguments["maxWorkers"] = max_workers
        result = self.mayor.call("spawn", arguments)
        if chosen is not None and set(chosen) & self.deleted:
            assert result.is_error, text_of(result)
            return
        assert not result.is_error, text_of(result)
        started = cast(list[dict[str, Any]], json.loads(text_of(result))["workers"])
        started_tasks = [worker["taskId"] for worker in started]
        assert len(set(started_tasks)) == len(started_tasks), started
        if chosen is not None:
            assert set(started_tasks) <= set(chosen), started
        self.workers += [worker["workerId"] for worker in started]

    @rule(runtime=st.sampled_from(["quick", "slow", "fails"]))
    @noted
    def wave(self, runtime: str) -> None:
        """The Mayor's loop in one step: spawn the ready wave, wait a little for it."""
        started = [worker["workerId"] for worker in self.mayor.ok("spawn", runtime=runtime)["workers"]]
        self.workers += started
        answer = self.mayor.ok("wait", workerIds=started, timeoutSeconds=0.1)
        assert {done["workerId"] for done in answer["done"]} | set(answer["running"]) == set(started), answer

    @rule(
        picks=st.none() | st.lists(PICK, min_size=1, max_size=3),
        mode=st.sampled_from(["all", "any"]),
        timeout=st.sampled_from([0, 0.02, 0.1]),
    )
    @noted
    def wait(self, picks: list[int] | None, mode: str, timeout: float) -> None:
        arguments: dict[str, Any] = {"mode": mode, "timeoutSeconds": timeout}
        if picks is not None and self.workers:
            arguments["workerIds"] = sorted({cast(str, self.worker(pick)) for pick in picks})
        answer = self.mayor.ok("wait", **arguments)
        ended = {done["workerId"] for done in answer["done"]}
        assert not ended & set(answer["running"]), answer

    @rule(pick=PICK, status=st.sampled_from(["pending", "failed"]))
    @noted
    def close(self, pick: int, status: str) -> None:
        if (worker := self.worker(pick)) is not None:
            answer = self.mayor.ok("close_agent", workerId=worker, taskStatus=status)
            assert answer["state"] not in ("starting", "running"), answer

    @rule(pick=PICK, message=st.text(min_size=1, max_size=40).filter(str.strip))
    @noted
    def send_input(self, pick: int, message: str) -> None:
        if (worker := self.worker(pick)) is not None:
            result = self.mayor.call("send_input", {"workerId": worker, "message": message})
            # A command worker has no session: refused, whether it still runs or has ended.
            assert result.is_error, text_of(result)

    @rule(pick=PICK, calls=st.lists(st.sampled_from(WORKER_CALLS), min_size=1, max_size=4))
    @noted
    def worker_reports(self, pick: int, calls: list[tuple[str, dict[str, Any]]]) -> None:
        if (worker := self.worker(pick)) is None:
            return
        with running_worker(self.mayor, worker) as me:
            if me is None:
                return  # it has ended: its token opens nothing (tests/security/test_worker_tokens.py)
            me.call("my_task", {})
            for tool, arguments in calls:
                me.call(tool, arguments)
            self.lab.answers.update(me.answers)

    # -- the Mayor's mail, files and imports

    @rule(pick=PICK, kind=st.sampled_from(["instruction", "info"]))
    @noted
    def send_message(self, pick: int, kind: str) -> None:
        if (worker := self.worker(pick)) is not None:
            self.mayor.ok("send_message", to=worker, subject="Use TOML", body="not YAML", type=kind)

    @rule(unread=st.booleans())
    @noted
    def fetch_inbox(self, unread: bool) -> None:
        self.mayor.ok("fetch_inbox", unreadOnly=unread)

    @rule(patterns=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2), exclusive=st.booleans())
    @noted
    def reserve(self, patterns: list[str], exclusive: bool) -> None:
        self.mayor.call("reserve_files", {"patterns": patterns, "exclusive": exclusive, "ttlSeconds": 60})

    @rule(everything=st.booleans())
    @noted
    def release(self, everything: bool) -> None:
        self.mayor.ok("release_files", **({} if everything else {"patterns": ["src/a.py"]}))
        self.mayor.ok("list_reservations")

    @rule()
    @noted
    def integrate(self) -> None:
        self.mayor.call("integrate", {})

    # Each import runs a stand-in program (a tenth of a second): a run has at most two.
    @precondition(lambda self: self.imports < 2)
    @rule(source=st.sampled_from(["import_wave", "import_beads"]))
    @noted
    def import_tasks(self, source: str) -> None:
        self.imports += 1
        answer = self.mayor.ok(source, **({"path": "wave.json"} if source == "import_wave" else {}))
        self.mayor.ok("wave_summary")
        created = cast(list[dict[str, Any]], answer["created"])
        self.created(
            [entry["taskId"] for entry in created],
            {(entry["taskId"], blocker) for entry in created for blocker in entry.get("blockedBy", [])},
        )


def _has_cycle(edges: set[tuple[str, str]]) -> bool:
    remaining = set(edges)
    while remaining:
        # Peel off tasks that wait for nothing left: what cannot be peeled is on a cycle.
        waiting = {waiter for waiter, _ in remaining}
        free = {blocker for _, blocker in remaining if blocker not in waiting}
        if not free:
            return True
        remaining = {(waiter, blocker) for waiter, blocker in remaining if blocker not in free}
    return False


# A pass takes seconds; a failure is shrunk, a run of real workers at a time, for up to five minutes.
@pytest.mark.timeout(600)
def test_random_sessions_keep_the_swarm_sound(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> None:
    with start_blocking_portal("asyncio") as portal:
        lab = Lab(portal, error_log, tmp_path)

        class InThisLab(Swarming):
            def __init__(self) -> None:
                super().__init__(lab)

        try:
            run_state_machine_as_test(
                InThisLab, settings=settings(FUZZ_SETTINGS, max_examples=30, stateful_step_count=40)
            )
        except Exception as reported:
            if lab.failures and reported is not lab.failures[0]:
                raise lab.failures[0] from reported
            raise
    print(f"random sessions: {lab.runs} runs, {sum(lab.answers.values())} calls")
