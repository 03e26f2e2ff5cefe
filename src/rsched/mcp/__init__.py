"""The MCP server (Model Context Protocol, official ``mcp`` 2.x SDK): tools and a resource
for agents, calling the same service functions as the HTTP API, the CLI and the worker.

- :mod:`rsched.mcp.server`: the ``MCPServer``, its tools, the progress resource and the
  one error mapping (service errors and bad arguments become tool error results).
- :mod:`rsched.mcp.transport`: ``rsched mcp`` over stdio (the caller is the user of the
  API token in ``RSCHED_API_TOKEN``) and the streamable-HTTP app mounted at ``/mcp`` of
  the API (every request authenticated by ``Authorization: Bearer <API token>``).

See docs/mcp.md.
"""
