"""OTLP in and out: spans from OpenTelemetry-instrumented apps join the gateway's by trace id, and the
record's spans go on to a user's collector (airlock.telemetry.exporter)."""

from airlock.telemetry.gateway import TRACES_PATH, install
from airlock.telemetry.otlp_in import Decoded, OtlpDecodeError, decode_json, decode_protobuf
from airlock.telemetry.otlp_out import export_request

__all__ = ["TRACES_PATH", "Decoded", "OtlpDecodeError", "decode_json", "decode_protobuf", "export_request", "install"]
