"""rpc_server."""
