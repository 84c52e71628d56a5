"""The store: section: server backends per concern and per region, secrets by variable name."""

from __future__ import annotations

import pytest

from airlock.config import parse_config
from airlock.config.load import environment_problems
from airlock.errors import ConfigError

DIGEST = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

BASE = f"""\
data_dir: ./data
node: {{name: eu-1, region: eu-west-1}}
upstreams:
  - name: local-vllm
    base_url: http://10.0.0.5:8000/v1
    region: eu-west-1
    jurisdiction: EU
    models: [{{name: llama-3-70b}}]
api_keys:
  - {{tenant: acme, key_sha256: {DIGEST}}}
"""

SERVERS = """\
store:
  postgres: {dsn_env: AIRLOCK_PG_DSN}
  redis: {url_env: AIRLOCK_REDIS_URL, on_unavailable: fail_open}
  clickhouse: {url_env: AIRLOCK_CH_URL, database: record}
  s3: {endpoint: "http://10.0.0.9:9000", bucket: airlock-eu, access_key_env: S3_KEY, secret_key_env: S3_SECRET}
"""


def test_each_concern_names_its_server_backend() -> None:
    store = parse_config(BASE + SERVERS).store.for_region("eu-west-1")
    assert store.postgres is not None and store.postgres.dsn_env == "AIRLOCK_PG_DSN"
    assert store.redis is not None and store.redis.on_unavailable == "fail_open"
    assert store.clickhouse is not None and store.clickhouse.database == "record"
    assert store.s3 is not None and store.s3.bucket == "airlock-eu"


def test_no_server_backend_means_every_concern_embedded() -> None:
    store = parse_config(BASE).store.for_region("eu-west-1")
    assert (store.postgres, store.redis, store.clickhouse, store.s3) == (None, None, None, None)


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("store:\n  postgres: {dsn_env: 'postgresql://u:pw@db/airlock'}\n", "store.postgres.dsn_env"),
        (
            "store:\n  s3: {endpoint: 'http://k:s@10.0.0.9', bucket: abc, access_key_env: A, secret_key_env: B}\n",
            "must not hold credentials",
        ),
        ("store:\n  clickhouse: {database: x}\n", "store.clickhouse.url_env"),
        ("store:\n  redis: {url_env: R, on_unavailable: maybe}\n", "store.redis.on_unavailable"),
        ("store:\n  postgres: {dsn_env: PG, pool: 4}\n", "store.postgres.pool"),
    ],
)
def test_a_wrong_backend_is_refused_naming_the_key(section: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + section)
    assert says in e.value.detail


def test_a_node_uses_only_its_own_regions_stores() -> None:
    text = BASE + (
        "store:\n  regions:\n"
        "    eu-west-1: {postgres: {dsn_env: PG_EU}, clickhouse: {url_env: CH_EU}}\n"
        "    us-east-1: {postgres: {dsn_env: PG_US}, clickhouse: {url_env: CH_US}}\n"
    )
    store = parse_config(text).store.for_region("eu-west-1")
    assert store.postgres is not None and store.postgres.dsn_env == "PG_EU"
    assert store.clickhouse is not None and store.clickhouse.url_env == "CH_EU"


def test_a_node_whose_region_has_no_stores_is_refused() -> None:
    text = BASE + "store:\n  regions:\n    us-east-1: {postgres: {dsn_env: PG_US}}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert "no entry for this node's region 'eu-west-1'" in e.value.detail


def test_backends_both_at_the_top_and_per_region_are_refused() -> None:
    text = BASE + "store:\n  postgres: {dsn_env: PG}\n  regions:\n    eu-west-1: {postgres: {dsn_env: PG_EU}}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert "either at the top of store: or per region" in e.value.detail


def test_unset_secret_variables_of_the_stores_are_named() -> None:
    config = parse_config(BASE + SERVERS)
    problems = environment_problems(config, {"AIRLOCK_PG_DSN": "host=/tmp", "S3_KEY": "k"})
    joined = "\n".join(problems)
    assert "store.redis.url_env: AIRLOCK_REDIS_URL is not set" in joined
    assert "store.clickhouse.url_env: AIRLOCK_CH_URL is not set" in joined
    assert "store.s3.secret_key_env: S3_SECRET is not set" in joined
    assert "AIRLOCK_PG_DSN" not in joined and "S3_KEY is not set" not in joined


def test_a_shared_record_without_shared_state_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + "store:\n  clickhouse: {url_env: CH}\n")
    assert "name store.postgres as well" in e.value.detail


def test_tail_sampling_runs_on_a_clickhouse_record() -> None:
    text = BASE + "sampling: {enabled: true}\nstore:\n  postgres: {dsn_env: PG}\n  clickhouse: {url_env: CH}\n"
    assert parse_config(text).sampling.enabled
