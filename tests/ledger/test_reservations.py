"""Advisory file reservations, on a real database and a clock the tests move."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import MAYOR
from mcp_swarm.ledger.patterns import overlaps
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.models import now
from mcp_swarm.server import answers
from mcp_swarm.store import Store
from tests.support.helpers import assigned_workers

pytestmark = pytest.mark.anyio


class Clock:
    """A clock that moves only when told, in `ledger.now()`'s format."""

    def __init__(self) -> None:
        self.time = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> str:
        return self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def advance(self, seconds: float) -> None:
        self.time += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def leases(store: Store, clock: Clock) -> Reservations:
    await assigned_workers(store, 3)
    return Reservations(store, clock=clock)


def reservations_table(store: Store) -> list[tuple[Any, ...]]:
    """Every row of the table as it is on disk, read past the engine."""
    with sqlite3.connect(store.path) as conn:
        return conn.execute("SELECT * FROM reservations ORDER BY id").fetchall()


async def test_an_exclusive_reservation_refuses_others_and_names_its_holder(leases: Reservations) -> None:
    [held] = await leases.reserve("worker-2", ["src/auth/*.py"], reason="login flow")
    assert answers.reservation(held) == {
        "id": held.id,
        "holder": "worker-2",
        "pattern": "src/auth/*.py",
        "exclusive": True,
        "reason": "login flow",
        "expiresAt": "2026-03-01T13:00:00.000Z",
    }
    before = reservations_table(leases.store)
    with pytest.raises(InvalidInput) as refused:
        await leases.reserve("worker-1", ["src/auth/*.py"])
    assert str(refused.value) == (
        "src/auth/*.py is reserved exclusively by worker-2 until 2026-03-01T13:00:00.000Z; "
        "wait for it or choose other files; nothing was reserved"
    )
    with pytest.raises(InvalidInput, match=r"src/auth/login.py overlaps src/auth/\*.py, .* by worker-2"):
        await leases.reserve("worker-1", ["src/auth/login.py"], exclusive=False)
    with pytest.raises(InvalidInput, match=r"src overlaps src/auth/\*.py, reserved exclusively by worker-2"):
        await leases.reserve(MAYOR, ["src"])
    assert reservations_table(leases.store) == before


async def test_a_refused_reservation_takes_none_of_its_patterns(leases: Reservations) -> None:
    await leases.reserve("worker-2", ["docs/api.md"])
    before = reservations_table(leases.store)
    with pytest.raises(InvalidInput, match=r"docs/api\.md is reserved exclusively by worker-2"):
        await leases.reserve("worker-1", ["src/a.py", "src/b.py", "docs/api.md"])
    assert reservations_table(leases.store) == before
    assert [r.pattern for r in await leases.active(holder="worker-1")] == []


async def test_shared_reservations_coexist_but_exclusive_and_shared_conflict(leases: Reservations) -> None:
    await leases.reserve("worker-1", ["schema.sql"], exclusive=False)
    await leases.reserve("worker-2", ["schema.sql"], exclusive=False)
    assert [(r.holder, r.exclusive) for r in await leases.active()] == [
        ("worker-1", False),
        ("worker-2", False),
    ]
    before = reservations_table(leases.store)
    with pytest.raises(InvalidInput, match=r"reserved \(shared\) by worker-1 .* or reserve shared"):
        await leases.reserve("worker-3", ["schema.sql"])
    await leases.reserve("worker-3", ["src/*.py"])
    with pytest.raises(InvalidInput, match="reserved exclusively by worker-3"):
        await leases.reserve("worker-1", ["src/models.py"], exclusive=False)
    assert len(reservations_table(leases.store)) == len(before) + 1


async def test_files_that_do_not_overlap_are_reserved_side_by_side(leases: Reservations) -> None:
    await leases.reserve("worker-1", ["src/a.py", "src/auth"])
    await leases.reserve("worker-2", ["src/b.py", "src/authz.py", "tests/test_a.py"])
    assert len(await leases.active()) == 5


async def test_an_expired_lease_no_longer_conflicts(leases: Reservations, clock: Clock) -> None:
    await leases.reserve("worker-1", ["src/a.py"], ttl_seconds=60)
    clock.advance(59.9)
    with pytest.raises(InvalidInput, match="worker-1"):
        await leases.reserve("worker-2", ["src/a.py"])
    clock.advance(0.1)
    assert await leases.active() == []
    [taken] = await leases.reserve("worker-2", ["src/a.py"])
    assert taken.holder == "worker-2"
    # Expired, it was not released, and it cannot be released any more.
    assert await leases.release("worker-1") == 0


async def test_reserving_a_held_pattern_again_renews_it(leases: Reservations, clock: Clock) -> None:
    [first] = await leases.reserve("worker-1", ["./src/a.py"], ttl_seconds=60, reason="refactor")
    assert first.pattern == "src/a.py"
    clock.advance(30)
    [renewed] = await leases.reserve("worker-1", ["src//a.py"], exclusive=False, ttl_seconds=120)
    assert (renewed.id, renewed.exclusive, renewed.reason) == (first.id, False, "refactor")
    assert renewed.expires_at == "2026-03-01T12:02:30.000Z"
    assert len(reservations_table(leases.store)) == 1
    # Downgraded to shared, it now lets another holder share the file.
    await leases.reserve("worker-2", ["src/a.py"], exclusive=False)


async def test_release_frees_all_or_the_named_patterns(leases: Reservations) -> None:
    await leases.reserve("worker-1", ["src/a.py", "src/b.py", "src/c.py"])
    await leases.reserve("worker-2", ["docs"])
    assert await leases.release("worker-1", ["./src/a.py", "src/zzz.py"]) == 1
    assert [r.pattern for r in await leases.active(holder="worker-1")] == ["src/b.py", "src/c.py"]
    await leases.reserve("worker-3", ["src/a.py"])
    assert await leases.release("worker-1") == 2
    assert await leases.release("worker-1") == 0
    assert [(r.holder, r.pattern) for r in await leases.active()] == [
        ("worker-2", "docs"),
        ("worker-3", "src/a.py"),
    ]


@pytest.mark.parametrize(
    ("patterns", "error"),
    [
        ([""], "must not be empty"),
        (["  "], "must not be empty"),
        ([], "at least one"),
        (["/etc/passwd"], "is absolute"),
        (["../secrets"], "leads outside the project"),
        (["src/../../secrets"], "leads outside the project"),
        (["src/.."], "names the whole project"),
        (["a\0b"], "NUL"),
        (["x" * 1001], "at most 1000 characters"),
        ([f"f{n}" for n in range(101)], "at most 100 patterns"),
    ],
)
async def test_patterns_outside_the_project_are_refused(
    leases: Reservations, patterns: list[str], error: str
) -> None:
    before = reservations_table(leases.store)
    with pytest.raises(InvalidInput, match=error):
        await leases.reserve("worker-1", ["ok.py", *patterns] if patterns else patterns)
    assert reservations_table(leases.store) == before


@pytest.mark.parametrize(
    ("holder", "ttl", "error"),
    [
        ("worker-9", 60, "is no worker"),
        ("boss", 60, "neither 'mayor' nor a worker id"),
        ("worker-1", 0.5, "between 1 and 86400"),
        ("worker-1", 86_401, "between 1 and 86400"),
        ("worker-1", float("nan"), "between 1 and 86400"),
    ],
)
async def test_bad_holders_and_lease_times_are_refused(
    leases: Reservations, holder: str, ttl: float, error: str
) -> None:
    with pytest.raises(InvalidInput, match=error):
        await leases.reserve(holder, ["src/a.py"], ttl_seconds=ttl)
    assert reservations_table(leases.store) == []


async def test_conflicts_lists_what_an_exclusive_reservation_would_meet_and_writes_nothing(
    leases: Reservations,
) -> None:
    shared = (await leases.reserve("worker-1", ["src/db.py"], exclusive=False))[0]
    exclusive = (await leases.reserve("worker-2", ["src/api"]))[0]
    await leases.reserve(MAYOR, ["src/cli.py"])
    before = reservations_table(leases.store)
    found = await leases.conflicts(MAYOR, ["src/*.py", "src/api/routes.py", "README.md"])
    assert found == [shared, exclusive]
    assert await leases.conflicts("worker-3", ["docs"]) == []
    assert reservations_table(leases.store) == before


async def test_the_real_clock_writes_leases_that_expire_ttl_seconds_later(store: Store) -> None:
    await assigned_workers(store, 1)
    [lease] = await Reservations(store).reserve("worker-1", ["a.py"], ttl_seconds=90)
    created = datetime.fromisoformat(lease.created_at)
    assert datetime.fromisoformat(lease.expires_at) - created == timedelta(seconds=90)
    assert len(lease.expires_at) == len(now())
    assert lease.expires_at.endswith("Z")


async def test_two_holders_racing_for_one_file_get_it_once(leases: Reservations) -> None:
    outcomes: dict[str, bool] = {}

    async def take(holder: str) -> None:
        try:
            await leases.reserve(holder, ["src/hot.py"])
            outcomes[holder] = True
        except InvalidInput:
            outcomes[holder] = False

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for holder in ("worker-1", "worker-2", "worker-3", MAYOR):
                group.start_soon(take, holder)
    assert sorted(outcomes.values()) == [False, False, False, True]
    assert len(await leases.active()) == 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("src/a.py", "src/a.py", True),
        ("src/*.py", "src/a.py", True),
        ("src", "src/a.py", True),
        ("src/[ab]", "src/a/x.py", True),
        ("a[1].py", "a[1].py", True),
        ("*", "anything/at/all", True),
        ("src/a.py", "src/b.py", False),
        ("src/auth", "src/authz.py", False),
        ("src/*.py", "tests/a.py", False),
        ("src/a.py", "src", True),
    ],
)
def test_overlap_of_two_patterns(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected
