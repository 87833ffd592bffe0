"""Tests of mcp_swarm.server: both servers' tools, in memory and over stdio, and the stdio wire."""
