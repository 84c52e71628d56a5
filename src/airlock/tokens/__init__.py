"""Tokens: offline tokenizers."""

from airlock.tokens.registry import TokenizerNotFound, available, count, get_encoding

__all__ = ["TokenizerNotFound", "available", "count", "get_encoding"]
