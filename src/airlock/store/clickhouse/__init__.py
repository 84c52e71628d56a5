"""The ClickHouse backend for the record: spans, hops and the blob index in MergeTree tables, written by
the recorder's writer (sink.ClickHouseSegmentSink) and read by the analyses' protocols (spans, query,
slices, drift, ...). It talks to ClickHouse through a transport (transport.py): a server over HTTP
(clickhouse-connect) or the engine in process (chdb). Import its modules by their full path."""

__all__: list[str] = []
