"""Tokens: offline tokenizers, chat formatting overhead, script mix, drift against the bill."""

from airlock.tokens.registry import (
    Tokenizer,
    TokenizerUnavailable,
    available,
    count,
    family_of,
    get_encoding,
    get_tokenizer,
    load_local,
)

__all__ = [
    "Tokenizer",
    "TokenizerUnavailable",
    "available",
    "count",
    "family_of",
    "get_encoding",
    "get_tokenizer",
    "load_local",
]
