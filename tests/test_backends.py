"""The server backends the suite runs against answer: PostgreSQL, Redis and the S3 server."""

from __future__ import annotations


def test_postgres_gives_each_test_an_empty_database_of_its_own(postgres_dsn: str) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        assert conn.execute("SELECT current_database()").fetchone()[0].startswith("airlock_test_")


def test_redis_answers_under_a_prefix_of_the_tests_own(redis_url: str, redis_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set(redis_prefix + "k", b"v")
    assert client.get(redis_prefix + "k") == b"v"
    client.close()


def test_s3_server_keeps_an_object(s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.put_object(Bucket=s3_bucket, Key="a", Body=b"bytes")
    assert client.get_object(Bucket=s3_bucket, Key="a")["Body"].read() == b"bytes"
    assert s3_endpoint.startswith("http://127.0.0.1:")
