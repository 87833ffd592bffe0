"""Tests of mcp_swarm.placement: local processes, tmux sessions and the worker wrapper."""
