"""The demo's OpenTelemetry-instrumented app: a support bot, traced with the OpenTelemetry SDK and
exported over OTLP/HTTP to the gateway's /v1/traces, whose model calls go through the gateway with the
trace context, so its spans and the gateway's join by trace id.

It plants the failing slice the slice finder should name: a prompt rollout in which version v8 breaks
answer rendering for clients in one region only (ap-south-1); everywhere else, and on v7 there, the
bot answers. The prompt version and the client's region travel as span attributes and as the gateway
request's x-airlock-prompt-version and x-airlock-attr-client.region headers."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, Tracer
from rich.console import Console

from airlock.store.demo import DemoRecord
from airlock.store.slices import SliceCandidates

REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
FAILING = ("ap-south-1", "v8")  # the planted slice: client region x prompt version
QUESTIONS = ("Where is my refund?", "How do I reset my password?", "Can I change my plan?", "Is there an outage?")


@dataclass
class InstrumentedRun:
    traces: int
    spans: int  # spans the app exported (the gateway records one more per trace)
    failed_traces: int


def _one(tracer: Tracer, client: openai.OpenAI, i: int, rng: random.Random) -> tuple[int, bool]:
    region = REGIONS[i % len(REGIONS)]
    version = "v8" if rng.random() < 0.35 else "v7"
    broken = (region, version) == FAILING
    with tracer.start_as_current_span("invoke_agent support-bot") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.prompt.name", "support-answer")
        root.set_attribute("gen_ai.prompt.version", version)
        root.set_attribute("client.region", region)
        ctx = root.get_span_context()
        client.chat.completions.create(
            model="agent-default",
            max_tokens=8,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            extra_headers={
                "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01",
                "x-airlock-prompt": "support-answer",
                "x-airlock-prompt-version": version,
                "x-airlock-attr-client.region": region,
                "x-airlock-attr-feature": "support-bot",
            },
        )
        with tracer.start_as_current_span("execute_tool render_answer") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.prompt.version", version)
            tool.set_attribute("client.region", region)
            if broken:
                tool.set_status(Status(StatusCode.ERROR, "template variable {regional_greeting} is undefined"))
                tool.set_attribute("error.type", "TemplateError")
        if broken:
            root.set_status(Status(StatusCode.ERROR, "answer could not be rendered"))
            root.set_attribute("error.type", "TemplateError")
    return 2, broken


def send_instrumented_traffic(base_url: str, api_key: str, requests: int = 180, seed: int = 6) -> InstrumentedRun:
    """Run the instrumented bot against the gateway at `base_url` (…/v1); returns what it sent."""
    root_url = base_url.removesuffix("/v1")
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "deployment.environment": "demo"})
    )
    exporter = OTLPSpanExporter(
        endpoint=f"{root_url}/v1/traces", headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    tracer = provider.get_tracer("support-bot")
    rng = random.Random(seed)
    draws = [random.Random(rng.random()) for _ in range(requests)]
    spans = failed = 0
    with (
        openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30) as client,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        for n, broken in pool.map(lambda i: _one(tracer, client, i, draws[i]), range(requests)):
            spans += n
            failed += broken
    provider.shutdown()  # flushes the batch
    return InstrumentedRun(requests, spans, failed)


def show_slices(console: Console, slices: SliceCandidates, record: DemoRecord, data_dir: Path, cli: str) -> None:
    """The slice finder on the demo's record, and the commands to ask more of it (data_dir: the record's
    folder, as the commands name it)."""
    from airlock.slices import SliceOptions, find_slices

    report = find_slices(slices, SliceOptions(top=3))
    failing = record.first_failed_received_trace()
    console.print(
        f"\n[bold]Slice finder[/bold] ({report.spans} spans, {report.failures} failed; Bonferroni over"
        f" {report.hypotheses:,} possible slices):"
    )
    for i, s in enumerate(report.slices, 1):
        console.print(
            f"  {i}. {s.label()}: {s.failures}/{s.spans} failed ({s.rate:.0%} against {s.rest_rate:.1%} elsewhere),"
            f" {s.excess:.0f} excess failures"
        )
    if not report.slices:
        console.print("  nothing stands out")
    d = f"-d {os.path.relpath(data_dir)}"
    console.print(f"  {cli} slices {d} --since 6h")
    console.print(f"  {cli} query {d} --by client.region,prompt_version --sort error_rate")
    console.print(f"  {cli} query {d} --where service.name=support-bot --by kind,status --format csv")
    if failing:
        trace = failing[:12]
        console.print(f"  {cli} traces show {d} {trace} --no-payloads   # the bot's spans and the gateway's, joined")
