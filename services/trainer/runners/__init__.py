"""Where jobs run: a local child process (default) or a Kubernetes Job."""
