"""The MCP surface: the Mayor's tools over stdio, and the worker endpoint (the worker tools over
loopback HTTP). The only code that imports mcp."""
