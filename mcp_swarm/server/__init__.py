"""The MCP surface: the Mayor's tools, a worker's tools, and stdio. The only code that imports mcp."""
