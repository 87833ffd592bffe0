"""Fixtures of the fuzz tests: the stand-in `ol` and `bd` on PATH, and the errors logged."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import STAND_INS
from tests.support.fuzz_servers import BEADS, ErrorLog


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ol` and `bd` stand-ins first on PATH, so the import tools read files and run commands."""
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ['PATH']}")
    beads = tmp_path / "beads.json"
    beads.write_text(json.dumps(BEADS))
    monkeypatch.setenv("BD_STANDIN_DB", str(beads))
    monkeypatch.delenv("OL_STANDIN_LOG", raising=False)


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
