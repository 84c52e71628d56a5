"""One bucket of an S3-compatible object store, under a key prefix, as the pack writer and reader use
it: put a pack, read a byte range of one, say whether the bucket can be reached. Every failure of the
client library becomes StoreUnavailable naming the endpoint and the bucket (never a credential).

Keys are built here and nowhere else: `<prefix>packs/<pack>`, where a pack name is
`<writer_id>/<name>.pack` of a closed alphabet, so a name read from an index row (or a configured
prefix) cannot reach a key outside the store's own space."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airlock.errors import ConfigError, StoreUnavailable

_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_PREFIX = re.compile(rf"(?:{_SEGMENT}/)*")
_WRITER_ID = re.compile(_SEGMENT)
_PACK = re.compile(rf"{_SEGMENT}/{_SEGMENT}\.pack")

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 3


def valid_key_prefix(prefix: str) -> str:
    """The configured key prefix, ending in "/" unless empty. ConfigError for a prefix that is not
    plain path segments (no leading "/", no "." or ".." segment, no empty segment)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _PREFIX.fullmatch(prefix) or any(part in (".", "..") for part in prefix.split("/")):
        raise ConfigError(f"store s3 prefix {prefix!r}: give plain path segments of letters, digits, '.', '_', '-'")
    return prefix


def valid_writer_id(writer_id: str) -> str:
    """A writer id that can name a folder of packs; ValueError otherwise."""
    if not _WRITER_ID.fullmatch(writer_id) or writer_id in (".", ".."):
        raise ValueError(f"writer id {writer_id!r} cannot name a pack folder")
    return writer_id


def is_pack_name(pack: str) -> bool:
    """Whether `pack` is a name this store could have written (`<writer_id>/<name>.pack`)."""
    return bool(_PACK.fullmatch(pack))  # neither segment can be "." or "..": none starts with a dot


class S3Bucket:
    """A boto3 S3 client on one bucket and key prefix. Thread-safe (boto3 clients are)."""

    def __init__(self, client: Any, endpoint: str, bucket: str, prefix: str = "") -> None:
        self._client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = valid_key_prefix(prefix)

    def describe(self) -> str:
        return f"S3 bucket {self.bucket!r} at {self.endpoint}"

    def pack_key(self, pack: str) -> str:
        """The object key of a pack; ValueError for a name that is not a pack name."""
        if not is_pack_name(pack):
            raise ValueError(f"{pack!r} is not a pack name")
        return f"{self.prefix}packs/{pack}"

    def put_pack(self, pack: str, data: bytes | bytearray) -> None:
        """Store a whole pack as one object (replacing one of that name: a retried upload is the same bytes)."""
        key = self.pack_key(pack)
        with self._failures(f"uploading {key}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def read_pack(self, pack: str, offset: int, length: int) -> bytes | None:
        """`length` bytes of a pack from `offset` (fewer where the object is shorter); None when the
        pack does not exist."""
        from botocore.exceptions import ClientError

        key = self.pack_key(pack)
        if length <= 0:
            return b""
        with self._failures(f"reading {key}"):
            try:
                answer = self._client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={int(offset)}-{int(offset) + int(length) - 1}"
                )
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                if code == "InvalidRange":  # the range starts past the object's end
                    return b""
                raise
            body = answer["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def delete_pack(self, pack: str) -> None:
        key = self.pack_key(pack)
        with self._failures(f"deleting {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def check(self) -> None:
        """Return if the bucket can be reached and read with these credentials; StoreUnavailable
        naming the endpoint, the bucket and the reason otherwise."""
        with self._failures("checking the bucket"):
            self._client.head_bucket(Bucket=self.bucket)

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Run the block; a failure of the client library is raised as StoreUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as e:
            raise StoreUnavailable(f"{self.describe()}: {what}: {_reason(e)}") from e


def _reason(error: BaseException) -> str:
    """What went wrong, in words: the HTTP status and code of an answer, or the connection's failure."""
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.response.get("Error", {}).get("Code", "") or "")
        hint = {
            "404": "no such bucket",
            "NoSuchBucket": "no such bucket",
            "403": "access denied (check the access key and secret)",
            "AccessDenied": "access denied (check the access key and secret)",
            "InvalidAccessKeyId": "the access key is not known",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
        }.get(code)
        return f"HTTP {status} {code}" + (f": {hint}" if hint else "")
    return f"{type(error).__name__}: {error}"


def open_s3(
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    prefix: str = "",
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> S3Bucket:
    """A client for `bucket` at `endpoint` (path-style addressing, which every S3-compatible server
    answers), with bounded timeouts and botocore's standard retries (`max_attempts` tries in all).
    Opening contacts nothing: `check()` says whether the bucket is reachable."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        # Servers other than AWS's may not know the newer default checksums: send them where required only.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )
    return S3Bucket(client, endpoint, bucket, prefix)
