"""The HTTP server in front of one loaded engine (docs/server.md)."""
