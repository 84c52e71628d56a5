"""airlock.yaml: one validated configuration file."""

from airlock.config.load import load_config, parse_config
from airlock.config.schema import Config, ModelSpec, Route, Target, Upstream

__all__ = ["Config", "ModelSpec", "Route", "Target", "Upstream", "load_config", "parse_config"]
