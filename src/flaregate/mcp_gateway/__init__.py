"""The MCP gateway: one ``/mcp`` endpoint (Streamable HTTP) in front of many MCP servers,
with the gateway's keys, tool permissions, limits and logs. Named ``mcp_gateway`` so it
never shadows the official SDK's top-level ``mcp`` package (the tests' client)."""
