"""puregrpc: a pure-Python gRPC server."""
