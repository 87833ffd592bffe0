"""SQLite persistence. Every SQL statement of mcp-swarm lives in this package."""

from mcp_swarm.store.database import SchemaTooNew, Store, Transaction

__all__ = ["SchemaTooNew", "Store", "Transaction"]
