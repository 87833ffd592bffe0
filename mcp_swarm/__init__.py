"""mcp-swarm: an MCP server that turns an agent session into the Mayor of a swarm of worker agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcp-swarm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
