"""What every benchmark prints the same way: quantiles, the machine's load, and the target checks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Check:
    passed: bool | None  # None: printed for context, not a target
    text: str


def quantile(data: Sequence[float], percent: int) -> float:
    if len(data) < 2:
        return float(data[0])
    # "inclusive" interpolates between observed samples, so p95 never exceeds the slowest one.
    return statistics.quantiles(data, n=100, method="inclusive")[percent - 1]


def spread(data: Sequence[float], unit: str, digits: int = 1) -> str:
    return (
        f"p50 {statistics.median(data):.{digits}f} {unit}, p95 {quantile(data, 95):.{digits}f} {unit}, "
        f"max {max(data):.{digits}f} {unit} (n={len(data)})"
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report_targets(checks: Sequence[Check], started: float) -> int:
    """Print each check and a closing line; the exit status is 1 if a target was missed."""
    print("\n== targets ==")
    for check in checks:
        print(f"{({True: 'PASS', False: 'FAIL', None: 'INFO'})[check.passed]}  {check.text}")
    met = sum(check.passed is True for check in checks)
    missed = sum(check.passed is False for check in checks)
    print(f"\nload average after: {load()}")
    # Not "N passed, N failed": CI reads a line of that shape as a test runner's verdict.
    print(f"targets met: {met}, missed: {missed}; took {time.perf_counter() - started:.1f} s")
    return 1 if missed else 0
