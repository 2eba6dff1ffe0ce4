"""Security checks against live workers (issue 7 item 7).

- Every route the web app mounts refuses a request without the configured token
  (401, JSON body, WWW-Authenticate) and accepts it with the token. The routes are read
  from the app's own router, so an admin route added later is covered automatically.
  Open by design: /health and /ready (orchestrators probe them), /metrics (Prometheus
  scrapes without credentials; it carries no user ids and no secrets, checked below),
  /openapi.json (a public description) and the console's static page and files
  (they hold no data; the console's data routes need the token).
- Templates cannot reach Python internals: a worker refuses to start, naming the
  template, and a template that only misbehaves for some users renders nothing there.
- Secrets (the API token, NUDGEFLOW_SECRET, destination whsec_ secrets) appear neither
  in the worker's debug-level log, nor in /metrics, nor in GET /users/<id>.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml
from aiohttp import web

from nudgeflow.web.server import build_web_app
from nudgeflow.worker import prepare
from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import Receiver
from tests.fixtures.workers import WorkerProcess

pytestmark = pytest.mark.kafka

TOKEN = "tok_" + "Zq7vLx2Pw9Rk4Tn8"
ENGINE_SECRET = "engine-secret-" + "Hb3Jm6Qs1Vy5"
DEST_SECRET = "whsec_" + base64.b64encode(b"destination-secret-0123456789").decode()
SECRETS = {
    "api token": TOKEN,
    "NUDGEFLOW_SECRET": ENGINE_SECRET,
    "destination secret": DEST_SECRET,
    "destination key": DEST_SECRET.removeprefix("whsec_"),
}
# Tracked links and open pixels are followed by email clients, with no token: the signed
# token in the path is their credential (a bad one gets a 400, never a redirect).
OPEN_PATHS = {
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/",
    "/favicon.ico",
    "/r/not-a-token",
    "/o/not-a-token.gif",
}
PATH_PARAMS = {"user_id": "sec-user", "rule": "welcome", "token": "not-a-token"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEST_HOST = "hook"  # the destination's name, shown in the user's delivery audit


def security_config(path: Path, receiver_url: str) -> Path:
    doc: dict[str, Any] = {
        "destinations": {
            "hook": {"url": receiver_url, "secret": "${SEC_DEST_SECRET}", "allow_private": True}
        },
        "templates": {
            "welcome.j2": "Welcome {{ user.name | default('there') }}",
            # Harmless with the sample context used at start-up, hostile for one user.
            "sneaky.j2": (
                "{% if user.name == 'mallory' %}{{ ''.__class__.__mro__[1].__subclasses__() }}"
                "{% else %}hi{% endif %}"
            ),
        },
        "rules": [
            {"name": "welcome", "trigger": "signup", "template": "welcome.j2"},
            {"name": "sneaky", "trigger": "ping", "template": "sneaky.j2"},
        ],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def debug_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by the test log at debug level (the fixture passes --log-level info)."""
    real = subprocess.Popen

    def popen(args: Any, *a: Any, **kw: Any) -> Any:
        if isinstance(args, list) and "--log-level" in args:
            args = list(args)
            args[args.index("--log-level") + 1] = "debug"
        return real(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUDGEFLOW_API_TOKEN", TOKEN)
    monkeypatch.setenv("NUDGEFLOW_SECRET", ENGINE_SECRET)
    monkeypatch.setenv("SEC_DEST_SECRET", DEST_SECRET)


@pytest.fixture
async def secure_worker(
    start_worker, receiver_factory, tmp_path: Path, secret_env: None, debug_logs: None
) -> tuple[WorkerProcess, Receiver, Path]:
    receiver: Receiver = await receiver_factory()
    config = security_config(tmp_path / "security.yaml", receiver.url)
    worker = await asyncio.to_thread(start_worker, config, wait=False)
    await asyncio.to_thread(worker.wait_ready, 120.0)
    return worker, receiver, config


def mounted_routes(config: Path, broker: str) -> Iterator[tuple[str, str, bool]]:
    """(method, path, is_static) for every route of the app the worker builds."""
    parts = prepare(config, {"broker": broker})
    app = build_web_app(parts.rt, parts.analytics)
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD next to each GET, with the same handler
        resource = route.resource
        assert resource is not None
        if isinstance(resource, web.StaticResource):
            yield route.method, resource.canonical + "/app.js", True
            continue
        path = resource.canonical
        for name, value in PATH_PARAMS.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"no test value for a parameter of {resource.canonical}"
        yield route.method, path, False


def valid_body(path: str) -> bytes:
    now = int(time.time() * 1000)
    if path == "/events":
        event = {"user_id": "sec-user", "type": "signup", "ts": now, "traits": {"name": "Sec"}}
        return msgspec.json.encode(event)
    if path.startswith("/v1/b"):
        return msgspec.json.encode({"batch": [{"type": "track", "userId": "s", "event": "x"}]})
    if path in ("/v1/alias", "/v1/a"):
        return msgspec.json.encode({"previousId": "sec-guest", "userId": "sec-seg"})
    return msgspec.json.encode({"userId": "sec-seg", "event": "Signed Up"})


async def test_every_route_needs_the_token_except_the_open_ones(secure_worker) -> None:
    worker, _, config = secure_worker
    routes = list(mounted_routes(config, worker.broker))
    assert {("POST", "/events"), ("GET", "/users/sec-user")} <= {(m, p) for m, p, _ in routes}
    checked: list[str] = []
    async with aiohttp.ClientSession() as session:
        for method, path, static in routes:
            url = worker.url + path
            body = valid_body(path) if method == "POST" else None
            headers = {"Content-Type": "application/json"}
            async with session.request(method, url, data=body, headers=headers) as resp:
                if path in OPEN_PATHS or static:
                    assert resp.status != 401, (method, path)
                    assert resp.status < 500, (method, path, resp.status)
                    continue
                assert resp.status == 401, (method, path, resp.status, await resp.text())
                assert resp.headers["WWW-Authenticate"].endswith('realm="nudgeflow"')
                problem = await resp.json()
                assert problem["code"] == "unauthorized" and problem["error"], problem
            for wrong in ("Bearer not-the-token", "Bearer " + TOKEN[:-1], TOKEN):
                bad = {**headers, "Authorization": wrong}
                async with session.request(method, url, data=body, headers=bad) as resp:
                    assert resp.status == 401, (method, path, wrong)
            async with session.request(method, url, data=body, headers={**headers, **AUTH}) as resp:
                assert resp.status not in (401, 403), (method, path)
                assert resp.status < 500, (method, path, resp.status, await resp.text())
                if method == "POST":  # ingestion accepts; pause/resume answer what they did
                    assert resp.status in (200, 201, 202), (path, await resp.text())
            checked.append(f"{method} {path}")
    print(f"\n[security] token checked on {len(checked)} routes: {checked}")
    assert len(checked) >= 12


async def test_segment_write_key_in_basic_auth_or_body_is_the_token(secure_worker) -> None:
    worker, _, _ = secure_worker
    url = worker.url + "/v1/track"
    message = {"userId": "seg-1", "event": "Signed Up"}
    basic = base64.b64encode(f"{TOKEN}:".encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=message, headers={"Authorization": f"Basic {basic}"}) as r:
            assert r.status == 202
        async with s.post(url, json={**message, "writeKey": TOKEN}) as r:
            assert r.status == 202
        async with s.post(url, json={**message, "writeKey": "guess"}) as r:
            assert r.status == 401 and (await r.json())["code"] == "unauthorized"


HOSTILE_TEMPLATES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ config }}",
    "{{ self._TemplateReference__context }}",
    "{{ request.application.__globals__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ (user|attr('__class__')) }}",
    "{{ '{0.__class__}'.format(user) }}",
]


@pytest.mark.parametrize("source", HOSTILE_TEMPLATES)
def test_a_worker_refuses_to_start_with_a_template_reaching_python_internals(
    source: str, tmp_path: Path, kafka_bootstrap: str
) -> None:
    config = tmp_path / "hostile.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "templates": {"hostile.j2": source},
                "rules": [{"name": "r", "trigger": "ping", "template": "hostile.j2"}],
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "nudgeflow", "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NUDGEFLOW_BROKER": kafka_bootstrap, "HOME": str(tmp_path)},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "hostile.j2" in output and "rules[r].template" in output, output
    assert not re.search(r"<class '|<module '|uid=\d", output), output


async def test_a_template_hostile_for_one_user_renders_nothing_for_them(secure_worker) -> None:
    worker, _, _ = secure_worker
    now = int(time.time() * 1000)
    events = [
        {"user_id": "mallory", "type": "ping", "ts": now, "traits": {"name": "mallory"}},
        {"user_id": "alice", "type": "ping", "ts": now, "traits": {"name": "alice"}},
    ]
    status, _ = await worker.post_events(events, token=TOKEN)
    assert status == 202
    triggers = await consume_all(
        worker.broker, f"{worker.prefix}.triggers", min_count=1, timeout=60
    )
    decisions = await consume_all(
        worker.broker, f"{worker.prefix}.decisions", min_count=2, timeout=60
    )
    fired = [msgspec.json.decode(t.value) for t in triggers if t.value]
    assert [t["user_id"] for t in fired] == ["alice"]
    assert fired[0]["message"] == "hi"
    refused = [
        d
        for d in (msgspec.json.decode(r.value) for r in decisions if r.value)
        if d.get("user_id") == "mallory"
    ]
    assert refused and all("template_error" in msgspec.json.encode(d).decode() for d in refused)
    text = b" ".join(r.value or b"" for r in decisions).decode()
    assert "<class '" not in text and "subprocess" not in text
    assert worker.proc is not None and worker.proc.poll() is None


async def test_secrets_stay_out_of_logs_metrics_and_user_views(secure_worker) -> None:
    worker, receiver, _ = secure_worker
    now = int(time.time() * 1000)
    user = f"sec-{uuid.uuid4().hex[:6]}"
    event = {"user_id": user, "type": "signup", "ts": now, "traits": {"name": "Sec"}}
    status, _ = await worker.post_events([event], token=TOKEN)
    assert status == 202
    delivered = await receiver.wait_for(1, timeout=60)  # signed with the destination secret
    assert delivered[0].headers["webhook-signature"].startswith("v1,")
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(worker.url + "/metrics") as resp:
            metrics_text = await resp.text()
        deadline = time.monotonic() + 60
        while True:  # the view lags the delivery audit a little
            async with session.get(f"{worker.url}/users/{user}") as resp:
                user_view = await resp.text()
                delivered_seen = resp.status == 200 and DEST_HOST in user_view
                if delivered_seen or time.monotonic() > deadline:
                    break
            await asyncio.sleep(1)
        assert resp.status == 200, user_view
        async with session.get(worker.url + "/openapi.json") as resp:
            openapi_text = await resp.text()
    await asyncio.sleep(1)
    log = worker.log_path.read_text(errors="replace") if worker.log_path else ""
    assert "DEBUG" in log.upper(), "the worker did not log at debug level"
    for where, text in (
        ("log", log),
        ("/metrics", metrics_text),
        (f"/users/{user}", user_view),
        ("/openapi.json", openapi_text),
    ):
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name} appears in {where}"
    assert user not in metrics_text  # no user ids in metric labels (DESIGN §5)
