"""mcp-swarm: an MCP server that turns an agent session into the Mayor of a swarm of worker agents."""

from importlib.metadata import PackageNotFoundError, version

# The name on the Python package index (`pipx install mcp-swarm-mayor`); "mcp-swarm" there is
# another project. The command stays `mcp-swarm` and the import name `mcp_swarm`.
DISTRIBUTION = "mcp-swarm-mayor"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["DISTRIBUTION", "__version__"]
