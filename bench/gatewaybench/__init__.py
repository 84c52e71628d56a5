"""The parts of bench/gateway.py, one job each.

* ``common``: the constants, paths, console and ``Target`` every part shares;
* ``procs``: starting, watching and stopping processes, readiness checks, plain HTTP requests;
* ``egress``: the local proxy sink that refuses and notes every outbound attempt;
* ``systems``: the sims, the pass-throughs and Airlock, and the list of paths under test;
* ``litellm_proxy``: LiteLLM's venv, config, start and outbound-attempt report;
* ``wrk``: the non-streaming throughput runs with wrk and their parsing;
* ``streaming``: the time-to-first-token client;
* ``machine``: what the report says about the machine;
* ``report``: the terminal tables and the markdown report.
"""
