"""The suite proves egress-freedom by running where only loopback exists (see tests/offline.py)."""

from __future__ import annotations

import os
import socket

import pytest

from airlock.errors import EgressRefused
from airlock.gateway.egress import EgressClient


@pytest.mark.skipif(not os.environ.get("AIRLOCK_TEST_OFFLINE"), reason="not run inside unshare -rn (see Makefile)")
def test_suite_runs_with_only_loopback() -> None:
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


def test_egress_client_refuses_unconfigured_destinations_before_connecting() -> None:
    client = EgressClient(["http://127.0.0.1:9101/v1", "https://models.internal:8443/v1"])
    client.check("http://127.0.0.1:9101/v1/chat/completions")
    client.check("https://models.internal:8443/v1/embeddings")
    for url in ("http://127.0.0.1:9102/v1", "https://example.com/v1", "http://models.internal:8443/v1"):
        with pytest.raises(EgressRefused):
            client.check(url)
    assert client.refused == 3
    assert client._session is None  # no socket was ever needed to refuse


def test_tokenizers_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tokenizer load tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    from airlock.tokens import registry

    registry._load.cache_clear()
    for name in registry.available():
        assert 1 <= registry.count(name, "hello world") <= 3, name
