"""Tests of mcp_swarm.workspace: git worktrees and merging."""
