"""The one outbound HTTP client. It connects only to hosts named in the configuration (upstreams,
tool targets); anything else is refused before a socket is opened, and the refusal is counted."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from airlock.errors import EgressRefused


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.hostname or "").lower(), port


class EgressClient:
    def __init__(self, allowed_urls: list[str], pool_size: int = 256) -> None:
        self.allowed = {_host_port(u) for u in allowed_urls}
        self.refused = 0
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def check(self, url: str) -> None:
        if _host_port(url) not in self.allowed:
            self.refused += 1
            host, port = _host_port(url)
            raise EgressRefused(f"{host}:{port} is not a configured destination", destination=f"{host}:{port}")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size, limit_per_host=self.pool_size, ttl_dns_cache=300, use_dns_cache=True
            )
            # trust_env=False: proxy variables must never route traffic somewhere unconfigured.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
