"""The gateway: an OpenAI-compatible front that forwards, fails over and hands every exchange to the recorder."""

from airlock.gateway.app import build_app, build_state
from airlock.gateway.server import serve

__all__ = ["build_app", "build_state", "serve"]
