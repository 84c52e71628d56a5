"""The one outbound HTTP client. It connects only to hosts named in the configuration (upstreams,
tool targets); anything else is refused before a socket is opened, and the refusal is counted."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from airlock.errors import EgressRefused


def _destination(url: str) -> tuple[str, str, int]:
    """(scheme, host, port): the scheme counts, so plain HTTP to a host configured for TLS is refused."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


class EgressClient:
    def __init__(self, allowed_urls: list[str], pool_size: int = 256) -> None:
        self.allowed = {_destination(u) for u in allowed_urls}
        self.refused = 0
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def check(self, url: str) -> None:
        dest = _destination(url)
        if dest not in self.allowed:
            self.refused += 1
            where = f"{dest[0]}://{dest[1]}:{dest[2]}"
            raise EgressRefused(f"{where} is not a configured destination", destination=where)

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
