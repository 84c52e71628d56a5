"""The `airlock` command: a thin layer over the capabilities. Nothing is imported from the package
itself: the command is `airlock.cli.main:main`."""

__all__: list[str] = []
