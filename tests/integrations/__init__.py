"""Tests of mcp_swarm.integrations: OL and beads."""
