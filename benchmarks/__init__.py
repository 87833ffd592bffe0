"""Benchmarks of mcp-swarm, run against the installed server: `python -m benchmarks.bench_ledger`."""
