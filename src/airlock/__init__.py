"""Airlock: a self-hosted, egress-free gateway and flight recorder for LLM agents."""

__version__ = "0.1.0"

__all__ = ["__version__"]
