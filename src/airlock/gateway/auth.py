"""Bearer API keys to tenants. Keys are held as sha256 digests; the raw key is never stored."""

from __future__ import annotations

import hashlib
import hmac
import os

from airlock.config.schema import Config
from airlock.errors import BadRequest, Unauthorized


class Authenticator:
    def __init__(self, config: Config, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._by_digest: dict[str, str] = {}
        for key in config.api_keys:
            if key.key_sha256:
                self._by_digest[key.key_sha256] = key.tenant
            elif key.key_env and env.get(key.key_env):
                self._by_digest[hashlib.sha256(env[key.key_env].encode()).hexdigest()] = key.tenant
        self._cache: dict[str, str] = {}

    def add_key(self, key: str, tenant: str) -> None:
        """A key known only to this process (e.g. the replay runner's own, never written anywhere)."""
        self._by_digest[hashlib.sha256(key.encode()).hexdigest()] = tenant

    def tenant_for(self, authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        if not authorization.isascii():  # raw bytes arrive surrogate-escaped, and no key is anything but ASCII
            raise BadRequest("the Authorization header must be ASCII")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        key = key.strip()
        tenant = self._cache.get(key)
        if tenant is not None:
            return tenant
        digest = hashlib.sha256(key.encode()).hexdigest()
        for known, name in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                if len(self._cache) < 10_000:
                    self._cache[key] = name
                return name
        raise Unauthorized("unknown API key")
