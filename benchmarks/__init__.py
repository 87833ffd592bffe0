"""Benchmarks of mcp-swarm: `./dev bench [NAME]`, or `python -m benchmarks.bench_NAME [OPTIONS]`."""
