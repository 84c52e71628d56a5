#!/usr/bin/env bash
# The test command behind `make test`: start the server backends (PostgreSQL and Redis, on Unix
# sockets, see tests/servers.py), then run the suite inside a network namespace with only loopback
# where the machine allows it, so any outbound connection attempt by the product or the tests fails.
# Without the servers installed the backend tests skip, except under CI (AIRLOCK_TEST_REQUIRE_BACKENDS=1),
# where a skip for want of a server is a failure.
set -u
BIN=$1
shift  # the rest are arguments for pytest
servers=$(mktemp -d /tmp/airlock-servers.XXXXXX)
trap '"$BIN/python" tests/servers.py stop "$servers"; rm -rf "$servers"' EXIT
if "$BIN/python" tests/servers.py start "$servers" >/dev/null; then
  . "$servers/env"
  echo "tests: PostgreSQL and Redis started under $servers"
else
  echo "tests: PostgreSQL or Redis could not be started (apt-get install postgresql redis-server); their tests skip"
fi
# The ClickHouse suite runs on chdb in process, and also through the HTTP transport against the same
# engine behind ClickHouse's HTTP interface (tests/conftest.py starts it inside the namespace).
export AIRLOCK_TEST_CLICKHOUSE_HTTP=1
if unshare -rn true 2>/dev/null; then
  echo "tests: in a network namespace with only loopback (unshare -rn)"
  unshare -rn "$BIN/python" tests/offline.py "$BIN/python" -m pytest -q "$@" || exit 1
  echo "tests: the writer's scheduling once more outside it (a user namespace may not leave SCHED_IDLE)"
  "$BIN/python" -m pytest -q -rs tests/record/test_scheduling.py || exit 1
else
  echo "tests: unshare -rn is not permitted here, running with the host network"
  "$BIN/python" -m pytest -q "$@" || exit 1
fi
