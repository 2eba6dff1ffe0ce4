"""Fuzzing the HTTP and WebSocket ingestion of a live worker (issue 7 item 5).

Hypothesis generates bodies and headers for every ingestion route (non-UTF-8 bytes,
deep nesting, huge numbers, wrong types, odd timestamps, content types, encodings,
credentials) and schemathesis exercises `GET /openapi.json`. Whatever arrives:
no 5xx, every 4xx is a JSON body saying why, the worker stays up, and the events
topic holds exactly the events that were acknowledged, each of them valid.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudgeflow.events.parse import parse_event
from nudgeflow.web.server import build_web_app
from nudgeflow.worker import prepare
from tests.faults.test_fuzz_parser import BAD_UTF8, SCALE, huge_numbers, json_values
from tests.fixtures.kafka import consume_all
from tests.fixtures.workers import ARTIFACTS, WorkerProcess

pytestmark = pytest.mark.kafka

TOKEN = "fuzz-token-7f3a9c1e"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
INGEST_PATHS = [
    "/events",
    "/v1/track",
    "/v1/t",
    "/v1/identify",
    "/v1/i",
    "/v1/page",
    "/v1/screen",
    "/v1/batch",
    "/v1/b",
]
RULES = "rules:\n  - name: ping\n    trigger: ping\n"


@dataclass
class Tally:
    """What the fuzzers sent and what the worker said (shared by the module's tests)."""

    requests: int = 0
    accepted: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ws_messages: int = 0


@pytest.fixture(scope="module")
def api_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One evaluate-only worker with an API token for the whole module."""
    root = tmp_path_factory.mktemp("fuzz-http")
    config = root / "rules.yaml"
    config.write_text(RULES)
    name = uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        config=config,
        broker=kafka_bootstrap,
        data_dir=root / "data",
        prefix=f"fz{name}",
        app_id=f"fz{name}",
        env={"NUDGEFLOW_ROLES": "evaluate", "NUDGEFLOW_API_TOKEN": TOKEN},
    ).start()
    try:
        worker.wait_ready(120)
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


# -- the generated requests ---------------------------------------------------------------

event_dicts = st.fixed_dictionaries(
    {
        "user_id": st.text(max_size=8) | st.integers() | json_values,
        "type": st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | json_values,
        "ts": huge_numbers.filter(lambda n: not isinstance(n, str))
        | st.datetimes().map(lambda d: d.isoformat())
        | st.just("NOW"),
    },
    optional={"event_id": json_values, "properties": json_values, "traits": json_values},
)
valid_event_dicts = st.fixed_dictionaries(
    {
        "user_id": st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        "type": st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        "ts": st.just("NOW"),
    },
    optional={"event_id": st.text(min_size=1, max_size=8), "properties": json_values},
)
segment_dicts = st.fixed_dictionaries(
    {},
    optional={
        "userId": st.text(max_size=8) | json_values,
        "anonymousId": st.text(max_size=8),
        "event": st.text(max_size=20) | json_values,
        "type": st.sampled_from(["track", "identify", "page", "alias"]) | json_values,
        "timestamp": st.just("NOW") | st.datetimes().map(lambda d: d.isoformat()) | json_values,
        "messageId": st.text(max_size=8) | json_values,
        "properties": json_values,
        "traits": json_values,
        "writeKey": st.sampled_from([TOKEN, "wrong"]),
    },
)
json_docs = (
    valid_event_dicts
    | st.lists(valid_event_dicts, min_size=1, max_size=5)
    | event_dicts
    | st.lists(event_dicts, max_size=5)
    | segment_dicts
    | st.fixed_dictionaries({"batch": st.lists(segment_dicts | json_values, max_size=5)})
    | json_values
)


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def _encode(doc: Any) -> bytes:
    """JSON bytes, with "NOW" replaced by the current time so some events are valid."""
    text = json.dumps(doc)
    return text.replace('"NOW"', json.dumps(_now_iso())).encode()


def _deep(depth: int) -> bytes:
    return (
        (
            '{"user_id":"u","type":"t","ts":"NOW","properties":'
            + '{"a":' * depth
            + "1"
            + "}" * depth
            + "}"
        )
        .replace("NOW", _now_iso())
        .encode()
    )


def _with_bad_byte(parts: tuple[bytes, bytes]) -> bytes:
    body, bad = parts
    cut = len(body) // 2
    return body[:cut] + bad + body[cut:]


bodies = st.one_of(
    json_docs.map(_encode),
    st.binary(max_size=400),
    st.tuples(json_docs.map(_encode), BAD_UTF8).map(_with_bad_byte),
    st.integers(min_value=1, max_value=5000).map(_deep),
    st.just(b"[" + b"{}," * 400_000 + b"{}]"),  # over the 1 MiB body limit
    st.sampled_from([b"", b"null", b"[]", b"{}", b'"x"', b"\xef\xbb\xbf{}", b"1e999"]),
)
content_types = st.sampled_from(
    [
        *["application/json"] * 8,
        "application/json; charset=utf-8",
        "text/plain",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        None,
        "nonsense/x-y",
    ]
)
credentials = st.sampled_from(
    [
        BEARER,
        BEARER,
        BEARER,
        {"Authorization": "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer"},
        {},
    ]
)
encodings = st.sampled_from([None, None, None, "gzip", "deflate", "gzip-garbage"])


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


def _request(path: str, body: bytes, ctype: str | None, creds: dict[str, str], enc: str | None):
    # A fresh connection each: after a body it cannot inflate, aiohttp answers and then
    # drops the connection, which a reused keep-alive connection would see as a reset.
    headers = {**creds, "Connection": "close"}
    if ctype is not None:
        headers["Content-Type"] = ctype
    if enc == "gzip":
        body = gzip.compress(body)
    elif enc == "deflate":
        body = zlib.compress(body)
    if enc is not None:
        headers["Content-Encoding"] = "gzip" if enc == "gzip-garbage" else enc
    return Request(path, body, headers)


http_requests = st.builds(
    _request, st.sampled_from(INGEST_PATHS), bodies, content_types, credentials, encodings
)


def _explained(resp: requests.Response) -> dict[str, Any]:
    assert resp.headers.get("Content-Type", "").startswith("application/json"), (
        resp.status_code,
        resp.headers,
        resp.text[:300],
    )
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    return body


def test_generated_requests_get_202_or_an_explained_4xx(
    api_worker: WorkerProcess, tally: Tally
) -> None:
    session = requests.Session()

    @settings(
        max_examples=2500 * SCALE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(http_requests)
    def exchange(req: Request) -> None:
        resp = session.post(
            api_worker.url + req.path, data=req.body, headers=req.headers, timeout=60
        )
        tally.requests += 1
        tally.statuses[resp.status_code] = tally.statuses.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (req, resp.status_code, resp.text[:300])
        if resp.status_code == 202:
            tally.accepted += resp.json()["accepted"]
        else:
            assert 400 <= resp.status_code < 500, resp.status_code
            _explained(resp)
            if resp.status_code == 401:
                assert "WWW-Authenticate" in resp.headers

    exchange()
    assert tally.requests >= 2500 * SCALE
    print(f"\n[fuzz-http] requests={tally.requests} statuses={tally.statuses}")
    assert_topic_holds_only_valid_events(api_worker, tally.accepted)


# -- WebSocket ----------------------------------------------------------------------------

ws_messages = st.one_of(
    json_docs.map(_encode).map(lambda b: b.decode()),
    json_docs.map(_encode),
    st.binary(max_size=300),
    st.tuples(json_docs.map(_encode), BAD_UTF8).map(_with_bad_byte),
    st.integers(min_value=1, max_value=3000).map(_deep),
    st.text(max_size=200),
)


class LoopThread:
    """An event loop in a thread, so a sync hypothesis test can drive one WebSocket."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_generated_websocket_messages_are_each_acknowledged(
    api_worker: WorkerProcess, tally: Tally
) -> None:
    lt = LoopThread()
    session: aiohttp.ClientSession = lt.run(_session())
    ws = lt.run(session.ws_connect(api_worker.url + "/ws/events", headers=BEARER))
    seq = 0

    async def send(message: str | bytes) -> Any:
        if isinstance(message, str):
            await ws.send_str(message)
        else:
            await ws.send_bytes(message)
        return await ws.receive_json(timeout=60)

    @settings(
        max_examples=600 * SCALE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(ws_messages)
    def exchange(message: str | bytes) -> None:
        nonlocal seq
        seq += 1
        ack = lt.run(send(message))
        tally.ws_messages += 1
        assert ack["seq"] == seq, ack
        if ack["ok"]:
            tally.accepted += 1
            assert "event_id" in ack  # null when the producer gave none
        else:
            assert ack["errors"] and all(e["reason"] and e["message"] for e in ack["errors"])

    try:
        exchange()
    finally:
        lt.run(ws.close())
        lt.run(session.close())
        lt.close()
    print(f"\n[fuzz-ws] messages={tally.ws_messages}")
    assert_topic_holds_only_valid_events(api_worker, tally.accepted)


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


# -- schemathesis against the served description ---------------------------------------------

# Browser assets, not API operations.
UNDOCUMENTED_ASSETS = {("GET", "/favicon.ico")}
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


def test_the_api_conforms_to_its_openapi_description(
    api_worker: WorkerProcess, tmp_path: Path
) -> None:
    """schemathesis (its CLI, so it reads the document the worker serves) on every operation."""
    report = tmp_path / "schemathesis.ndjson"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            api_worker.url + "/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(25 * SCALE),
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--generation-deterministic",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
    )
    summary = result.stdout[-3000:]
    (ARTIFACTS / "schemathesis.txt").write_text(result.stdout + result.stderr)
    print(f"\n[schemathesis] {summary}")
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert api_worker.proc is not None and api_worker.proc.poll() is None
    assert requests.get(api_worker.url + "/health", timeout=10).status_code == 200


def test_every_route_the_worker_mounts_is_described(api_worker: WorkerProcess) -> None:
    """A route added later without its description fails here, not silently."""
    served = requests.get(api_worker.url + "/openapi.json", timeout=10).json()
    parts = prepare(api_worker.config, {"broker": api_worker.broker})
    app = build_web_app(parts.rt, parts.analytics)
    undocumented = {
        (route.method, resource.canonical)
        for route in app.router.routes()
        if (resource := route.resource) is not None
        and route.method != "HEAD"
        and not isinstance(resource, web.StaticResource)
        and route.method.lower() not in served["paths"].get(resource.canonical, {})
    }
    assert undocumented <= UNDOCUMENTED_ASSETS, undocumented - UNDOCUMENTED_ASSETS
    assert served["openapi"] == "3.1.0"


# -- afterwards: nothing invalid reached Kafka ----------------------------------------------


def assert_topic_holds_only_valid_events(worker: WorkerProcess, acknowledged: int) -> None:
    """Every acknowledged event is on `<prefix>.events`, every record there is valid
    (schemathesis may have added valid ones too), and the evaluator refused none."""

    async def check() -> int:
        records = await consume_all(
            worker.broker, f"{worker.prefix}.events", min_count=acknowledged, timeout=60
        )
        for record in records:
            assert record.value is not None
            parse_event(record.value, now_ms=None)  # raises if anything invalid got through
        assert len(records) >= acknowledged
        dlq = await consume_all(worker.broker, f"{worker.prefix}.events.dlq", timeout=5)
        assert dlq == []
        return len(records)

    on_topic = asyncio.run(check())
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    assert requests.get(worker.url + "/health", timeout=10).status_code == 200
    print(f"[fuzz-topic] acknowledged={acknowledged} on_topic={on_topic}")
