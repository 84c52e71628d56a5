"""A real gateway on the server backends: payload packs in the S3 server, control-plane state in
PostgreSQL, limits in Redis; the read commands find the payloads through the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "where do my bytes go?"}], "max_tokens": 4}


def _s3_objects(endpoint: str, bucket: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_payloads_go_to_the_bucket_and_come_back_through_the_config(
    tmp_path: Path, sims: dict[str, Sim], s3_endpoint: str, s3_bucket: str, postgres_dsn: str
) -> None:
    store = {
        "postgres": {"dsn_env": "TEST_PG_DSN"},
        "s3": {
            "endpoint": s3_endpoint,
            "bucket": s3_bucket,
            "access_key_env": "TEST_S3_KEY",
            "secret_key_env": "TEST_S3_SECRET",
            "prefix": "eu/",
        },
    }
    config = write_config(tmp_path, {"sim-eu": sims["sim-eu"]}, store=store)
    env = {"TEST_PG_DSN": postgres_dsn, "TEST_S3_KEY": "test", "TEST_S3_SECRET": "test"}
    gw = Gateway(config, env=env)
    try:
        for _ in range(3):
            answer = httpx.post(
                f"{gw.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
            )
            assert answer.status_code == 200
        rows = wait_recorded(gw.data_dir, 3)
    finally:
        gw.stop()
    keys = _s3_objects(s3_endpoint, s3_bucket)
    assert keys and all(k.startswith("eu/packs/") for k in keys)
    assert not list((gw.data_dir / "blobs").glob("*.pack"))  # nothing kept in local packs
    digest = rows[0]["airlock.payload.upstream_request"]
    shown = subprocess.run(
        [sys.executable, "-m", "airlock", "blob", "-c", str(config), digest],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert b"where do my bytes go?" in shown.stdout
