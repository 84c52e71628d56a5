"""Side-by-side gateway benchmark: direct to the simulator, the bare pass-through, Airlock, and LiteLLM's proxy.

Usage:
    python bench/gateway.py [--duration S] [--concurrency 1,8,32] [--skip-litellm]
                            [--rounds N] [--stream-requests N] [--warmup S] [--keep-logs]
                            [--output bench/RESULTS.md]

Run it with the project's venv (/work/main/.venv/bin/python). It starts, on 127.0.0.1 only:

* ``airlock sim --output-tokens 8`` (no delays): the upstream for the request/response runs;
* ``airlock sim --output-tokens 1000`` (no delays): the upstream for the streaming runs;
* ``bench/passthrough.py`` in front of each sim: the floor (aiohttp + uvloop, no parsing, no recording);
* ``airlock serve`` with a temporary data dir (recording is always on), one worker;
* LiteLLM's proxy, one worker, from ``bench/.venv-litellm`` (created with ``pip install 'litellm[proxy]'`` when
  missing). Its HTTP(S) proxy variables point at a local sink that refuses and notes every outbound attempt.

For each path and concurrency, ``wrk`` (one thread, ``bench/chat.lua``) POSTs a small non-streaming chat
completion for ``--duration`` seconds, ``--rounds`` times with the paths interleaved in each round (the table
gives each path's median round, and each ratio's median and range over the rounds); then an aiohttp client
measures time to first token of 1,000-token streams, sequentially, interleaving the paths. The table goes to the
terminal and, as markdown, to ``bench/RESULTS.md``. All processes are stopped at the end, also on Ctrl-C or errors.
Only ratios within one run mean anything: the machine is small and shared.

This file parses the arguments and runs the steps in order; the parts live in ``bench/gatewaybench/``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gatewaybench.common import BENCH, STREAM_TOKENS, console
from gatewaybench.egress import EgressSink
from gatewaybench.litellm_proxy import litellm_egress, litellm_note
from gatewaybench.machine import dir_size, machine_info, recorder_note
from gatewaybench.procs import Procs, StartError, stop_on_signals
from gatewaybench.report import Report, markdown, print_report
from gatewaybench.streaming import run_streams
from gatewaybench.systems import check_targets, start_all
from gatewaybench.wrk import run_throughput


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--concurrency", default="1,8,32", help="comma list of wrk connection counts (default 1,8,32)")
    p.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput rows (default 3)")
    p.add_argument("--stream-requests", type=int, default=200, help="sequential streams per path (default 200)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per path, 0 for none (default 1)")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with every process's log")
    p.add_argument(
        "--output", type=Path, default=BENCH / "RESULTS.md", help="markdown report (default bench/RESULTS.md)"
    )
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    return args


def run(args: argparse.Namespace, procs: Procs, sink: EgressSink, workdir: Path) -> Report:
    targets, litellm = start_all(procs, workdir, sink, args.skip_litellm)
    machine = machine_info(litellm)
    notes = check_targets(targets)
    console.print(
        f"[bold]throughput: {len(targets)} paths × concurrency {args.concurrency} × {args.rounds} rounds, "
        f"{args.duration:g} s each"
    )
    throughput = run_throughput(targets, args.concurrency, args.duration, args.warmup, procs, notes, args.rounds)
    procs.note_deaths(notes)
    # LiteLLM has no streaming row; its background tasks (spend logs, health checks) would otherwise land
    # at random on the streams of the paths that do, on a machine with two cores.
    procs.stop("litellm")
    console.print(f"[bold]streaming: {args.stream_requests} × {STREAM_TOKENS}-token streams per path")
    streams = asyncio.run(run_streams([t for t in targets if t.stream_url], args.stream_requests))
    procs.note_deaths(notes)
    time.sleep(1.5)  # let the recorder flush its last segment
    notes.append(recorder_note(workdir / "airlock-data"))
    files, size = dir_size(workdir / "airlock-data")
    notes.append(f"Airlock's data dir held {files} files, {size / 1e6:.1f} MB after the run (recording on).")
    if not args.skip_litellm:
        litellm.egress = litellm_egress(procs, sink)
        notes.append(litellm_note(litellm))
    return Report(machine, throughput, streams, litellm, args, notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        console.print("[red]wrk is not installed (apt-get install wrk)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    procs, sink = Procs(workdir), EgressSink()
    t0 = time.monotonic()
    try:
        with stop_on_signals():
            report = run(args, procs, sink, workdir)
    except StartError as e:
        console.print(f"[red]benchmark aborted: {e}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping everything")
        return 130
    finally:
        procs.stop_all()
        sink.close()
        if args.keep_logs:
            console.print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.notes.append(f"Total benchmark time {time.monotonic() - t0:.0f} s.")
    print_report(report)
    args.output.write_text(markdown(report))
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
