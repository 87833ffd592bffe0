"""Tests of mcp_swarm.ledger: task rules, mail, reservations and write scopes."""
