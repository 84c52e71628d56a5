"""Payload packs on an S3-compatible object store: `open_s3` for a bucket, `S3PackWriter` (a
PayloadSink) and `S3PayloadReader` (a PayloadReader located through a `BlobLocator`). boto3 is
imported only when a bucket is opened."""

from airlock.store.s3.bucket import S3Bucket, open_s3
from airlock.store.s3.packs import S3PackWriter
from airlock.store.s3.reader import BlobLocator, S3PayloadReader

__all__ = ["BlobLocator", "S3Bucket", "S3PackWriter", "S3PayloadReader", "open_s3"]
