"""The `mcp-swarm` command line."""
