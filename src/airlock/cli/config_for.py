"""The config an analysis command prices with: --config, else ./airlock.yaml, else the airlock.yaml beside
--data-dir (where `airlock demo` writes it); --data-dir then overrides its data_dir."""

from __future__ import annotations

from pathlib import Path

import click

from airlock.config.schema import Config
from airlock.store import Stores


def config_for(data_dir: str | None, config_path: str | None, must_exist: bool = True) -> Config:
    from airlock.config import load_config
    from airlock.errors import ConfigError

    candidates = [config_path] if config_path else ["airlock.yaml"]
    if not config_path and data_dir:
        candidates.append(str(Path(data_dir).resolve().parent / "airlock.yaml"))
    path = next((c for c in candidates if Path(c).is_file()), None)
    if path is None:
        raise click.UsageError(
            f"prices and profiles come from the config: give --config FILE ({candidates[0]} not found)"
        )
    try:
        config = load_config(path)
    except ConfigError as e:
        raise click.UsageError(f"config refused: {e.detail}") from None
    if data_dir:
        config = config.model_copy(update={"data_dir": str(Path(data_dir).resolve())})
    if must_exist and not Path(config.data_dir).exists():
        raise click.UsageError(f"no data directory at {config.data_dir}")
    return config


def stores_for(data_dir: str | None, config_path: str | None) -> Stores:
    """The stores a read command reads: with --data-dir alone, that directory's embedded record; else
    the config's (--config, or ./airlock.yaml), whatever backend its `store:` section names."""
    from airlock.config import load_config
    from airlock.errors import ConfigError, StoreError
    from airlock.store import build_stores, embedded_stores

    try:
        if data_dir and not config_path:
            if not Path(data_dir).exists():
                raise click.UsageError(f"no data directory at {data_dir}")
            return embedded_stores(data_dir)
        path = config_path or ("airlock.yaml" if Path("airlock.yaml").exists() else None)
        if path is None:
            raise click.UsageError("give --data-dir DIR or --config FILE (no airlock.yaml here)")
        try:
            config = load_config(path)
        except ConfigError as e:
            raise click.UsageError(f"config refused: {e.detail}") from None
        if data_dir:
            config = config.model_copy(update={"data_dir": str(Path(data_dir).resolve())})
        record_here = config.store.for_region(config.node.region).clickhouse is None
        if record_here and not Path(config.data_dir).exists():
            raise click.UsageError(f"no data directory at {config.data_dir}")
        return build_stores(config)
    except StoreError as e:
        raise click.UsageError(f"the store cannot be opened: {e.detail}") from None
