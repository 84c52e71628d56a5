"""The embedded store: one data directory, no server."""

from airlock.store.embedded.blobs import BlobCorrupt, PackWriter
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.query import BlobReader, DuckDBSpanReader
from airlock.store.embedded.segments import ParquetSegments
from airlock.store.embedded.state import SQLiteState

__all__ = ["BlobCorrupt", "BlobReader", "DataDir", "DuckDBSpanReader", "PackWriter", "ParquetSegments", "SQLiteState"]
