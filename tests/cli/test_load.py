"""Under load nothing is lost: 200 concurrent streaming clients for 30 s against a
scripted upstream; every request gets its complete stream and exactly one completed row,
and the recorded tokens add up to what the upstream sent."""

from __future__ import annotations

import contextlib
import http.client
import json
import sqlite3
import threading
import time
from pathlib import Path

from tests import wire
from tests.cli.test_crash import db_path
from tests.cli.test_shutdown import serving
from tests.fake_upstream import FakeUpstream

CLIENTS = 200
DURATION_S = 30.0
REQUEST = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_two_hundred_concurrent_streams_for_thirty_seconds_lose_nothing(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    canned = wire.messages_stream()
    done = [0] * CLIENTS
    errors: list[str] = []
    start = threading.Barrier(CLIENTS + 1)

    with serving(tmp_path, upstream, PROXY_THREADS="256") as (proc, port):
        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            start.wait()
            deadline = time.monotonic() + DURATION_S
            try:
                while time.monotonic() < deadline:
                    conn.request("POST", "/v1/messages", body=REQUEST,
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or body != canned.body:
                        errors.append(f"client {index}: {resp.status} {body[:300]!r}")
                        return
                    done[index] += 1
            except Exception as exc:
                errors.append(f"client {index}: {exc!r}")
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        start.wait()
        for thread in threads:
            thread.join(timeout=DURATION_S + 120)
        proc.terminate()  # drain, then close the database cleanly
        assert proc.wait(timeout=60) == 0

    assert errors == []
    requests = sum(done)
    print(f"{requests} complete streams from {CLIENTS} clients in {DURATION_S:.0f} s "
          f"(fewest per client: {min(done)})")
    assert min(done) > 0  # every client was served, none starved
    with contextlib.closing(sqlite3.connect(db_path(tmp_path))) as conn:
        rows, completed, tokens = conn.execute(
            "SELECT COUNT(*), SUM(lifecycle_status = 'completed'), SUM(total_tokens) "
            "FROM request_logs").fetchone()
        counted = conn.execute("SELECT SUM(request_count) FROM daily_usage").fetchone()[0]
    assert (rows, completed) == (requests, requests)
    assert tokens == requests * canned.usage.total_tokens
    assert counted == requests
