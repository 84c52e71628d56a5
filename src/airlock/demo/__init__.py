"""`airlock demo`: two simulated regions, the gateway, a scripted agent workload, then a report."""

from airlock.demo.runner import run_demo

__all__ = ["run_demo"]
