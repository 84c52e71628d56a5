"""The `airlock` command: a thin layer over the capabilities."""
