"""Tests of mcp_swarm.engine: batching, verdicts and the swarm itself."""
