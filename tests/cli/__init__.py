"""Tests of mcp_swarm.cli: the commands, run as a person runs them."""
