"""Fixtures for the S3 payload store: a bucket on moto's server (no client retries, so a failure shows
at once), a raw boto3 client to damage objects with, and a forwarder that can play a dead endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from s3_support import Forwarder

from airlock.store.s3 import S3Bucket, open_s3


@pytest.fixture
def bucket(s3_endpoint: str, s3_bucket: str) -> S3Bucket:
    return open_s3(s3_endpoint, s3_bucket, "test", "test", "us-east-1", "eu/airlock", max_attempts=1)


@pytest.fixture
def raw_s3(s3_endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )


@pytest.fixture
def forwarder(s3_endpoint: str) -> Iterator[Forwarder]:
    parts = urlsplit(s3_endpoint)
    f = Forwarder((parts.hostname or "127.0.0.1", parts.port or 80))
    yield f
    f.close()
