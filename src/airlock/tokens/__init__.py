"""Tokens: offline tokenizers, chat formatting overhead, script mix, drift against the bill."""

from airlock.tokens.registry import (
    Tokenizer,
    TokenizerNotFound,
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
    "TokenizerNotFound",
    "TokenizerUnavailable",
    "available",
    "count",
    "family_of",
    "get_encoding",
    "get_tokenizer",
    "load_local",
]
