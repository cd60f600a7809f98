"""The `flywheel` command: the local runner (up/status/down), `serve`, and per-service tools."""
