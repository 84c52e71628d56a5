"""The slice finder: attribute-value combinations whose failure, latency or cost rate stands out."""

from airlock.slices.finder import METRICS, Slice, SliceOptions, SliceReport, find_slices, report_rows

__all__ = ["METRICS", "Slice", "SliceOptions", "SliceReport", "find_slices", "report_rows"]
