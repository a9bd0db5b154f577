"""puregrpc's own server-side HTTP/2 engine (RFC 9113), sans-I/O."""
