"""The gateway: an OpenAI-compatible front that forwards, fails over and hands every exchange to the
recorder. `airlock.gateway.server.serve` runs it (through airlock.compose, which wires it)."""

from airlock.gateway.app import Surface, build_app, build_state

__all__ = ["Surface", "build_app", "build_state"]
