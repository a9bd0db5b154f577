"""Integration tests: puregrpc over real sockets, grpcio's client as the reference."""
