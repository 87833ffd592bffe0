"""What the tests share: clients of the servers, helpers, stand-in programs, scripted models, the
invariants of a swarm database, and recorded fixtures."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
# Stand-in `bd` and `ol` CLIs, and `record_run`, a program that records how it was run.
STAND_INS = Path(__file__).parent / "stand_ins"
# Output recorded from the real agent CLIs, and the snapshots of both servers' tools.
FIXTURES = Path(__file__).parent / "fixtures"
