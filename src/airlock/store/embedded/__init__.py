"""The embedded store: one data directory, no server."""

from airlock.store.embedded.blobs import FileBlobStore
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query import DuckDBSpanReader
from airlock.store.embedded.segments import ParquetSegments
from airlock.store.embedded.state import SQLiteState

__all__ = ["DataDir", "DuckDBSpanReader", "FileBlobStore", "ParquetSegments", "SQLiteState"]
