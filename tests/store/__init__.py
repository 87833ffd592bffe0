"""Tests of mcp_swarm.store: the SQLite database, its schema and its transactions."""
