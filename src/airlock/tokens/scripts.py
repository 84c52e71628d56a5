"""The script mix of a text: the share of its letters in each writing system, by Unicode ranges.
Tokenizers disagree most on non-Latin scripts, so drift is analysed per script."""

from __future__ import annotations

import bisect
import functools

# (first code point, last code point, script), from the Unicode block chart.
_RANGES = sorted(
    [
        (0x0041, 0x005A, "Latin"),
        (0x0061, 0x007A, "Latin"),
        (0x00C0, 0x024F, "Latin"),
        (0x1E00, 0x1EFF, "Latin"),
        (0x0370, 0x03FF, "Greek"),
        (0x0400, 0x052F, "Cyrillic"),
        (0x0590, 0x05FF, "Hebrew"),
        (0x0600, 0x06FF, "Arabic"),
        (0x0750, 0x077F, "Arabic"),
        (0x08A0, 0x08FF, "Arabic"),
        (0xFB50, 0xFDFF, "Arabic"),
        (0xFE70, 0xFEFF, "Arabic"),
        (0x0900, 0x097F, "Devanagari"),
        (0x0E00, 0x0E7F, "Thai"),
        (0x1100, 0x11FF, "Hangul"),
        (0x3130, 0x318F, "Hangul"),
        (0xAC00, 0xD7AF, "Hangul"),
        (0x3040, 0x309F, "Hiragana/Katakana"),
        (0x30A0, 0x30FF, "Hiragana/Katakana"),
        (0x31F0, 0x31FF, "Hiragana/Katakana"),
        (0xFF66, 0xFF9F, "Hiragana/Katakana"),
        (0x3400, 0x4DBF, "Han"),
        (0x4E00, 0x9FFF, "Han"),
        (0xF900, 0xFAFF, "Han"),
        (0x20000, 0x2FA1F, "Han"),
    ]
)
_STARTS = [r[0] for r in _RANGES]
SCRIPTS = (
    "Latin",
    "Han",
    "Hiragana/Katakana",
    "Hangul",
    "Cyrillic",
    "Arabic",
    "Devanagari",
    "Thai",
    "Greek",
    "Hebrew",
    "other",
)


def script_of(ch: str) -> str | None:
    """The script of a letter, 'other' for a letter of another script, None for non-letters."""
    cp = ord(ch)
    if cp < 0x80:
        return "Latin" if ch.isalpha() else None
    i = bisect.bisect_right(_STARTS, cp) - 1
    if i >= 0 and cp <= _RANGES[i][1]:
        return _RANGES[i][2]
    return "other" if ch.isalpha() else None


_CODES = {
    "Latin": "L",
    "Han": "H",
    "Hiragana/Katakana": "K",
    "Hangul": "G",
    "Cyrillic": "C",
    "Arabic": "A",
    "Devanagari": "D",
    "Thai": "T",
    "Greek": "E",
    "Hebrew": "B",
    "other": "O",
}
_NAMES = {code: name for name, code in _CODES.items()}
SAMPLE_CHARS = 4096  # the mix of a long text is read from an even sample of this many characters


@functools.cache
def _table() -> dict[int, str | None]:
    """Code point -> one-letter script code (None deletes non-letters), for the Basic Multilingual Plane."""
    table: dict[int, str | None] = {}
    for cp in range(0x10000):
        script = script_of(chr(cp))
        table[cp] = _CODES[script] if script else None
    return table


def script_mix(text: str) -> dict[str, float]:
    """Share of letters per script (summing to 1), or {} for a text without letters. Runs in C
    (str.translate) over at most SAMPLE_CHARS evenly spaced characters."""
    if len(text) > SAMPLE_CHARS:
        text = text[:: len(text) // SAMPLE_CHARS + 1]
    coded = text.translate(_table())
    counts = {_NAMES[code]: n for code in _NAMES if (n := coded.count(code))}
    total = sum(counts.values())
    return {s: round(n / total, 4) for s, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


KANA_SHARE = 0.05  # Japanese mixes Han and kana; a little kana marks the text as Japanese
NON_LATIN_SHARE = 0.2  # tokenizers disagree on non-Latin text, so a fifth of it already moves the ratio


def dominant_script(mix: dict[str, float]) -> str:
    """The script a text is analysed under: Hiragana/Katakana when it has any real share of kana;
    otherwise the largest non-Latin script when it is at least a fifth of the letters (an English system
    prompt around a Korean question bills like Korean); otherwise the largest; 'none' without letters."""
    if not mix:
        return "none"
    if mix.get("Hiragana/Katakana", 0.0) >= KANA_SHARE:
        return "Hiragana/Katakana"
    non_latin = [(share, script) for script, share in mix.items() if script != "Latin"]
    if non_latin and max(non_latin)[0] >= NON_LATIN_SHARE:
        return max(non_latin)[1]
    return max(mix.items(), key=lambda kv: kv[1])[0]
