"""Tests of mcp_swarm.runtimes: the command lines each adapter builds, and how it reads output."""
