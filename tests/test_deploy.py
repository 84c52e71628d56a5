"""The worked deployment under deploy/ stays true: each node's config loads, each node writes only to
its own region's stores, and the units and load balancers name what exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from airlock.cli.main import cli
from airlock.config import load_config

DEPLOY = Path(__file__).parent.parent / "deploy"


def test_every_node_config_loads_and_uses_its_own_regions_stores() -> None:
    configs = sorted((DEPLOY / "config").glob("*.yaml"))
    assert len(configs) == 4
    buckets = {}
    for path in configs:
        config = load_config(path)
        assert config.node.name == path.stem
        stores = config.store.for_region(config.node.region)
        assert stores.s3 is not None and config.node.region in stores.s3.bucket
        assert stores.postgres is not None and stores.postgres.dsn_env.startswith(
            f"AIRLOCK_{config.node.region[:2].upper()}_"
        )
        buckets[path.stem] = stores.s3.bucket
    assert buckets["eu-west-1-a"] == buckets["eu-west-1-b"] != buckets["us-east-1-a"] == buckets["us-east-1-b"]


def test_the_systemd_unit_runs_commands_the_cli_has() -> None:
    unit = (DEPLOY / "systemd" / "airlock@.service").read_text()
    for line in re.findall(r"^Exec\w+=(.+)$", unit, flags=re.M):
        words = line.split()
        assert words[0].endswith("/airlock")
        command = cli
        for word in words[1:]:
            commands = getattr(command, "commands", None)
            if commands is None:  # a command: the rest are its arguments
                break
            command = commands[word]
        assert getattr(command, "commands", None) is None


def test_each_load_balancer_sends_to_its_regions_two_nodes_only() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for region, prefix in (("eu-west-1", "10.1.0."), ("us-east-1", "10.2.0.")):
        conf = (DEPLOY / "nginx" / f"airlock-{region}.conf").read_text()
        servers = re.findall(r"server (\d+\.\d+\.\d+\.\d+):8080", conf)
        assert len(servers) == 2 and all(s.startswith(prefix) for s in servers)
        nodes = [name for name in compose["services"] if name.startswith(region)]
        assert len(nodes) == 2
        assert all(set(compose["services"][n]["networks"]) == {region[:2]} for n in nodes)
