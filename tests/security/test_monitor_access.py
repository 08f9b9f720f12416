"""The monitor's HTTP side, attacked: no credential, a bad or stolen one, another tenant's
view. The real monitor app on the real broker and PostgreSQL, as a client reaches it.

Every attempt must fail with its specific reason, each refusal must reach ``lepton.audit``,
and the table of attacks (attack, expected, result) is printed at the end.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer

from lepton import LeptonClient
from lepton.bus import Publisher
from lepton.config import Settings
from lepton.contract import default_codec
from lepton.contract.identity import IdentityKey, Principal, SigningKey
from lepton.errors import InvalidTokenError, StackError
from services.monitor.app import MonitorService
from tests.integration.test_monitor import (
    MASTER,
    OPERATOR,
    bearer,
    eventually,
    fresh_prefix,
    get_raw,
    heartbeat,
    now_ms,
    running,
    settings_for,
    topic,
)
from tests.samples import sample

pytestmark = pytest.mark.integration

A, B = "acme", "globex"  # "globex" appears in nothing of acme's, so a leak shows
KEYS = {tenant: MASTER.derive(Principal("tenant", tenant)) for tenant in (A, B)}
NODE = "node-shared"
ROUTES = [
    "/",
    "/api/whoami",
    "/api/overview",
    "/api/nodes",
    f"/api/nodes/{NODE}",
    "/api/jobs",
    f"/api/jobs/{A}-running",
    "/api/queues",
    "/api/datasets",
    "/api/models",
    "/api/pipeline",
    "/api/alerts",
    "/api/series?metric=nodes",
    "/api/stream",
    "/static/app.js",
    "/metrics/",
    "/healthz",
]
TABLE: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def attack_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints every attempt of this module as a table, past pytest's capture."""
    yield
    if not TABLE:
        return
    rows = [("attack", "expected", "result"), *TABLE]
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print()
        for attack, expected, result in rows:
            print(f"{attack:<{widths[0]}}  {expected:<{widths[1]}}  {result}")


def tried(attack: str, expected: str, result: str) -> None:
    TABLE.append((attack, expected, result))


def work_of(tenant: str, now: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, record): a running and a waiting job, a rejected dataset, a model whose
    second evaluation regressed (an alert of the tenant's own), promoted."""
    records: list[tuple[str, str, dict[str, Any]]] = []
    for job, name in ((f"{tenant}-running", f"{tenant}-secret-job"), (f"{tenant}-waiting", None)):
        request = sample("lepton.JobRequested")
        request.update(
            job_id=job, tenant=tenant, name=name, priority_class="high", submitted_at=now
        )
        records.append(("lepton.jobs.requested", job, request))
    started = sample("lepton.JobEvent", 0)
    started.update(job_id=f"{tenant}-running", tenant=tenant, kind="started", time=now + 5)
    records.append(("lepton.jobs.events", f"{tenant}-running", started))
    rejected = sample("lepton.DataRejected")
    rejected.update(tenant=tenant, dataset=f"{tenant}-data", rejected_at=now)
    records.append(("lepton.data.rejected", f"{tenant}/{tenant}-data", rejected))
    for index, score in ((1, 0.9), (2, 0.7)):
        evaluated = sample("lepton.ModelEvaluated")
        evaluated.update(
            model_id=f"{tenant}-model-{index}",
            tenant=tenant,
            model_name=f"{tenant}-churn",
            metrics={"roc_auc": score},
            evaluated_at=now + index,
        )
        records.append(("lepton.models.evaluated", f"{tenant}-model-{index}", evaluated))
    promoted = sample("lepton.ModelPromoted")
    promoted.update(
        tenant=tenant,
        model_name=f"{tenant}-churn",
        model_id=f"{tenant}-model-1",
        verdict="promoted",
    )
    records.append(("lepton.models.promoted", f"{tenant}/{tenant}-churn", promoted))
    return records


@dataclass(frozen=True)
class Scene:
    monitor: MonitorService
    prefix: str
    api: str
    metrics: str


@pytest.fixture(scope="module")
async def scene(bootstrap: str, database_url: str) -> AsyncIterator[Scene]:
    """One monitor that has read both tenants' work (checked with an operator's token)."""
    prefix = fresh_prefix()
    async with (
        running(settings_for(bootstrap, database_url, prefix)) as monitor,
        Publisher(bootstrap, default_codec(), source="tests") as publisher,
    ):
        now = now_ms()
        beat = heartbeat(NODE, sent_at=now)
        beat["running_job_ids"] = [f"{A}-running", f"{B}-running"]
        await publisher.publish(topic(prefix, "lepton.node.heartbeats"), NODE, beat)
        for tenant in (A, B):
            for declared, key, record in work_of(tenant, now):
                await publisher.publish(topic(prefix, declared), key, record)
        assert monitor.url is not None
        assert monitor.metrics_url is not None

        async def everything_read() -> bool | None:
            _, _, body = await get_raw(monitor.url or "", "/api/alerts")
            alerts = {alert["tenant"] for alert in json.loads(body)["active"]}
            _, _, body = await get_raw(monitor.url or "", "/api/jobs")
            jobs = {job["job_id"] for job in json.loads(body)["jobs"]}
            return True if alerts == {A, B} and len(jobs) == 4 else None

        await eventually(everything_read, what="both tenants' work in the operator's view")
        yield Scene(monitor, prefix, monitor.url, monitor.metrics_url)


def _open(
    url: str, headers: Mapping[str, str], method: str = "GET", body: bytes | None = None
) -> Any:
    request = urllib.request.Request(url, headers=dict(headers), method=method, data=body)
    try:
        return urllib.request.urlopen(request, timeout=20)  # loopback only
    except urllib.error.HTTPError as error:
        return error


def first_update(url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The first live update of the SSE stream at ``url``."""
    with _open(url, headers) as response:
        assert response.status == 200
        for line in response:
            if line.startswith(b"data: "):
                update: dict[str, Any] = json.loads(line[6:])
                return update
    raise AssertionError("the stream ended without an update")


async def audit_events(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    """Every event on this monitor's lepton.audit so far (read until a second passes
    without more)."""
    consumer = AIOKafkaConsumer(
        topic(prefix, "lepton.audit").name,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    codec = default_codec()
    found: list[dict[str, Any]] = []
    try:
        while batches := await consumer.getmany(timeout_ms=1000):
            found += [
                dict(codec.decode(message.value, expected="lepton.AuditEvent")[1])
                for messages in batches.values()
                for message in messages
            ]
        return found
    finally:
        await consumer.stop()


async def refused(base: str, path: str, headers: Mapping[str, str]) -> tuple[int, str, str]:
    """Status, reason (from the body) and WWW-Authenticate of a request meant to be refused."""
    status, answer_headers, body = await get_raw(base, path, headers)
    challenge = {k.lower(): v for k, v in answer_headers.items()}.get("www-authenticate", "")
    if path == "/":  # the sign-in page, saying why
        return status, html.unescape(body.decode()), challenge
    return status, json.loads(body)["error"], challenge


def token(key: SigningKey, ttl_s: int = 300) -> str:
    return key.token(int(time.time()) + ttl_s)


CREDENTIALS = {
    "no credential": ({}, "no credential"),
    "a wrong token": ({"Authorization": "Bearer not-a-token"}, "malformed token"),
    "an expired token": (
        {"Authorization": f"Bearer {token(OPERATOR, -1)}"},
        "token expired",
    ),
    "a token of another master": (
        {"Authorization": f"Bearer {token(IdentityKey.generate().derive(OPERATOR.principal))}"},
        "token signature does not match",
    ),
    "a tenant's token renamed to another": (
        {"Authorization": "Bearer " + token(KEYS[B]).replace(f"tenant:{B}", f"tenant:{A}")},
        "token signature does not match",
    ),
    "a Basic credential": (
        {"Authorization": "Basic b3BlcmF0b3I6cGFzc3dvcmQ="},
        "the Authorization header is not `Bearer <token>`",
    ),
    "an expired session cookie": (
        {"Cookie": f"lepton_session={token(OPERATOR, -1)}"},
        "token expired",
    ),
}


@pytest.mark.parametrize("attack", sorted(CREDENTIALS))
async def test_a_bad_credential_is_refused_on_every_route_with_its_reason(
    attack: str, scene: Scene
) -> None:
    headers, reason = CREDENTIALS[attack]
    for path in ROUTES:
        status, said, challenge = await refused(scene.api, path, headers)
        assert status == 401, (attack, path)
        assert reason in said, (attack, path, said)
        assert challenge.startswith('Bearer realm="lepton-monitor"'), challenge
        assert f'error_description="{reason}' in challenge, challenge
        if attack != "no credential":
            assert 'error="invalid_token"' in challenge
    tried(f"{attack}, on {len(ROUTES)} routes", f"401 {reason}", f"401 {said[:60]}")


async def test_a_token_in_the_url_is_never_accepted(scene: Scene) -> None:
    status, said, _ = await refused(scene.api, f"/api/jobs?token={token(OPERATOR)}", {})
    assert (status, said.split(":")[0]) == (401, "no credential")
    tried("a token in the query string", "401 no credential", f"{status} {said[:40]}")


async def test_a_nodes_token_has_no_monitor_view(scene: Scene) -> None:
    node = MASTER.derive(Principal("node", NODE))
    status, said, challenge = await refused(
        scene.api, "/api/jobs", {"Authorization": f"Bearer {token(node)}"}
    )
    assert (status, said) == (403, f"node:{NODE} has no monitor view: nodes only report")
    assert 'error="insufficient_scope"' in challenge
    tried("a node's token", "403 no monitor view", f"{status} {said}")


async def test_refusals_are_logged_without_the_token_and_audited(
    bootstrap: str, scene: Scene
) -> None:
    stolen = token(IdentityKey.generate().derive(Principal("tenant", A)))
    with structlog.testing.capture_logs() as logs:
        status, _, _ = await refused(
            scene.api, "/api/models", {"Authorization": f"Bearer {stolen}"}
        )
    assert status == 401
    (entry,) = [entry for entry in logs if entry["event"] == "refused"]
    assert entry["reason"] == "token signature does not match"
    assert (entry["actor"], entry["claimed"], entry["resource"]) == (
        "anonymous",
        f"tenant:{A}",
        "monitor:GET /api/models",
    )
    assert entry["client"] == "127.0.0.1"
    mac = stolen.rsplit(".", 1)[1]
    assert not any(mac in str(value) for value in entry.values())

    async def audited() -> dict[str, Any] | None:
        for event in await audit_events(bootstrap, scene.prefix):
            if event["resource"] == "monitor:GET /api/models" and "does not match" in (
                event["detail"] or ""
            ):
                return event
        return None

    event = await eventually(audited, what="the refusal on lepton.audit")
    assert (event["actor"], event["tenant"], event["action"], event["outcome"]) == (
        "anonymous",
        A,
        "read",
        "denied",
    )
    assert event["detail"] == (
        f"401 token signature does not match; from 127.0.0.1; the token named tenant:{A}"
    )
    assert mac not in json.dumps(event)
    tried("a forged token, then the audit trail", "logged and audited, no token", "both")


def _post(base: str, path: str, body: bytes, headers: Mapping[str, str]) -> Any:
    """POST without following a redirect: (status, headers, body)."""
    where = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=20)
    try:
        connection.request("POST", path, body, dict(headers))
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


async def post(base: str, path: str, body: bytes = b"", **headers: str) -> Any:
    given = {"Content-Type": "application/x-www-form-urlencoded"}
    given.update({name.replace("_", "-"): value for name, value in headers.items()})
    return await asyncio.to_thread(_post, base, path, body, given)


async def test_a_browser_signs_in_with_a_form_and_gets_a_strict_cookie(scene: Scene) -> None:
    status, _, page = await get_raw(scene.api, "/login", {})
    assert status == 200
    assert '<form method="post" action="/login">' in page.decode()
    secret = token(OPERATOR, 120)
    status, headers, _ = await post(scene.api, "/login", f"token={secret}".encode())
    assert (status, headers["location"]) == (303, "/")
    cookie = headers["set-cookie"]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert cookie.startswith(f"lepton_session={secret};")
    assert {"httponly", "path=/", "samesite=strict"} <= attributes
    max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("max-age="))
    assert 100 <= max_age <= 120  # as long as the token lives
    status, _, body = await get_raw(
        scene.api, "/api/whoami", {"Cookie": f"lepton_session={secret}"}
    )
    assert (status, json.loads(body)["principal"]) == (200, "operator:tests")
    status, headers, _ = await post(scene.api, "/logout", Cookie=f"lepton_session={secret}")
    assert (status, headers["location"]) == (303, "/login")
    assert "max-age=0" in headers["set-cookie"].lower()
    tried(
        "sign in with the form", "303, cookie HttpOnly SameSite=Strict", f"{status} {cookie[:15]}"
    )


@pytest.mark.parametrize(
    ("attack", "headers", "status", "reason"),
    [
        ("another site's form", {"Sec_Fetch_Site": "cross-site"}, 403, "another site's page"),
        ("another origin's form", {"Origin": "http://evil.example"}, 403, "another site's page"),
        ("a forged token in the form", {}, 401, "token signature does not match"),
    ],
)
async def test_a_sign_in_from_elsewhere_or_with_a_bad_token_is_refused(
    attack: str, headers: dict[str, str], status: int, reason: str, scene: Scene
) -> None:
    key = IdentityKey.generate().derive(OPERATOR.principal) if status == 401 else OPERATOR
    answer, answer_headers, page = await post(
        scene.api, "/login", f"token={token(key)}".encode(), **headers
    )
    assert answer == status
    assert reason in html.unescape(page)
    assert "set-cookie" not in answer_headers
    tried(f"sign in: {attack}", f"{status} {reason}", f"{answer}, no cookie")


def _read_all(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    with _open(url, headers) as response:
        return response.status, response.read()


async def get_json(base: str, path: str, key: SigningKey) -> Any:
    status, _, body = await get_raw(base, path, bearer(key))
    assert status == 200, (path, body)
    return json.loads(body)


# Every route a tenant may read, each answered (200) for acme: none may name globex.
TENANT_ROUTES = [
    "/api/whoami",
    "/api/overview",
    "/api/nodes",
    f"/api/nodes/{NODE}",
    "/api/jobs",
    f"/api/jobs?tenant={A}",
    f"/api/jobs/{A}-running",
    "/api/queues",
    "/api/datasets",
    "/api/models",
    "/api/alerts",
    "/api/series?metric=nodes",
    "/api/series?metric=utilisation",
    "/api/series?metric=queue_pending",
    f"/api/series?metric=queue_wait_p95_s&subject={A}/high",
]


async def test_a_tenants_token_sees_only_its_own_work_on_every_route(scene: Scene) -> None:
    for path in TENANT_ROUTES:
        status, _, body = await get_raw(scene.api, path, bearer(KEYS[A]))
        assert status == 200, (path, body)
        assert B not in body.decode(), path
    mine = KEYS[A]
    assert {job["job_id"] for job in (await get_json(scene.api, "/api/jobs", mine))["jobs"]} == {
        f"{A}-running",
        f"{A}-waiting",
    }
    datasets = (await get_json(scene.api, "/api/datasets", mine))["datasets"]
    assert [d["dataset"] for d in datasets] == [f"{A}-data"]
    board = (await get_json(scene.api, "/api/models", mine))["leaderboard"]
    assert [(m["model_name"], m["champion"]) for m in board] == [(f"{A}-churn", f"{A}-model-1")]
    alerts = await get_json(scene.api, "/api/alerts", mine)
    assert {a["tenant"] for a in alerts["active"] + alerts["history"]} == {A}
    node = await get_json(scene.api, f"/api/nodes/{NODE}", mine)
    assert node["running_job_ids"] == [f"{A}-running"]
    queued = await get_json(scene.api, "/api/series?metric=queue_pending&resolution=10", mine)
    assert set(queued["series"]) == {f"{A}/high"}
    tried(f"tenant {A} reads {len(TENANT_ROUTES)} routes", f"nothing of {B}", "nothing")


async def test_a_tenants_stream_carries_only_its_own_work(scene: Scene) -> None:
    update = await asyncio.to_thread(first_update, scene.api + "api/stream", bearer(KEYS[A]))
    text = json.dumps(update)
    assert B not in text
    assert {job["job_id"] for job in update["jobs"]} == {f"{A}-running", f"{A}-waiting"}
    assert update["overview"]["pipeline"] is None
    everyone = await asyncio.to_thread(first_update, scene.api + "api/stream", bearer())
    assert {job["tenant"] for job in everyone["jobs"]} == {A, B}
    assert everyone["overview"]["pipeline"]["events"] > 0
    tried(f"tenant {A} opens the stream", f"nothing of {B}", "nothing")


async def test_an_operators_token_sees_every_tenant(scene: Scene) -> None:
    jobs = (await get_json(scene.api, "/api/jobs", OPERATOR))["jobs"]
    assert {job["tenant"] for job in jobs} == {A, B}
    datasets = (await get_json(scene.api, "/api/datasets", OPERATOR))["datasets"]
    assert {d["tenant"] for d in datasets} == {A, B}
    board = (await get_json(scene.api, "/api/models", OPERATOR))["leaderboard"]
    assert {m["tenant"] for m in board} == {A, B}
    node = await get_json(scene.api, f"/api/nodes/{NODE}", OPERATOR)
    assert node["running_job_ids"] == [f"{A}-running", f"{B}-running"]
    assert (await get_json(scene.api, f"/api/jobs?tenant={B}", OPERATOR))["jobs"]
    service = MASTER.derive(Principal("service", "scheduler"))
    assert len((await get_json(scene.api, "/api/jobs", service))["jobs"]) == 4
    tried("an operator's / a service's token", "every tenant", "every tenant")


# What acme may not read, the answer, and the owner the audit trail names.
FORBIDDEN = [
    (f"/api/jobs?tenant={B}", 403, f"tenant:{A} may not read the jobs of tenant '{B}'", B),
    (f"/api/datasets?tenant={B}", 403, f"tenant:{A} may not read the datasets of tenant '{B}'", B),
    (f"/api/models?tenant={B}", 403, f"tenant:{A} may not read the models of tenant '{B}'", B),
    ("/api/pipeline", 403, "covers every tenant: operators and services only", None),
    ("/api/series?metric=events_per_s", 403, "the events_per_s series covers every tenant", None),
    ("/api/series?metric=queue_pending&subject=all", 403, f"only of subjects {A}/", None),
    (f"/api/series?metric=queue_pending&subject={B}/high", 403, f"only of subjects {A}/", B),
    (f"/api/jobs/{B}-running", 404, f"no job '{B}-running' is known", B),
]


async def test_another_tenants_work_is_refused_and_audited(bootstrap: str, scene: Scene) -> None:
    for path, status, reason, _ in FORBIDDEN:
        answer, said, _ = await refused(scene.api, path, bearer(KEYS[A]))
        assert (answer, reason in said) == (status, True), (path, said)
        tried(f"tenant {A}: GET {path}", f"{status} {reason}", f"{answer} {said[:60]}")
    # Another tenant's job answers exactly as a job that does not exist.
    assert (await refused(scene.api, "/api/jobs/none", bearer(KEYS[A])))[:2] == (
        404,
        "no job 'none' is known",
    )

    async def all_audited() -> list[dict[str, Any]] | None:
        events = [
            event
            for event in await audit_events(bootstrap, scene.prefix)
            if event["actor"] == f"tenant:{A}"
        ]
        return events if len(events) >= len(FORBIDDEN) else None

    events = await eventually(all_audited, what="every refusal on lepton.audit")
    for path, status, _, owner in FORBIDDEN:
        resource = f"monitor:GET {path.partition('?')[0]}"
        assert any(
            event["resource"] == resource
            and event["owner"] == owner
            and (event["detail"] or "").startswith(f"{status} ")
            and (event["tenant"], event["outcome"]) == (A, "denied")
            for event in events
        ), (path, events)
    hidden = [e for e in events if e["resource"] == f"monitor:GET /api/jobs/{B}-running"]
    assert hidden[0]["detail"].startswith("404 the job is another tenant's")


async def test_the_sdk_mints_a_short_token_from_its_signing_key(
    bootstrap: str, database_url: str, scene: Scene, tmp_path: Path
) -> None:
    def client(**keys: str) -> LeptonClient:
        settings = Settings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            topic_prefix=scene.prefix,
            monitor_url=scene.api.rstrip("/"),
            **keys,
        )
        return LeptonClient(settings)

    async with client(signing_key=KEYS[A].to_text()) as tenant:
        assert {job["tenant"] for job in await tenant.jobs()} == {A}
        assert [m["tenant"] for m in await tenant.models()] == [A]
    # Without a key of its own, the local stack's operator (from the master key).
    async with client(identity_key=MASTER.to_text()) as operator:
        assert {job["tenant"] for job in await operator.jobs()} == {A, B}
        session = await operator._monitor.get("/api/whoami")
        assert session["principal"] == "operator:local"
        assert 0 < session["expires_at"] - time.time() * 1000 <= 300_000
    stranger = IdentityKey.generate().derive(Principal("tenant", A))
    async with client(signing_key=stranger.to_text()) as forged:
        with pytest.raises(InvalidTokenError, match="token signature does not match"):
            await forged.jobs()
    # No key at all (no stack in this state directory): the monitor answers, and refuses.
    async with client(state_dir=str(tmp_path)) as keyless:
        with pytest.raises(StackError, match="no identity key"):
            await keyless.jobs()
    tried("the SDK with a tenant's / another master's key", "own jobs / 401", "own jobs / 401")


async def test_the_stream_ends_when_its_token_expires(scene: Scene) -> None:
    headers = bearer(OPERATOR, ttl_s=2)
    started = time.monotonic()
    status, body = await asyncio.to_thread(_read_all, scene.api + "api/stream", headers)
    # Ended by the expiry, not by a keepalive's 15 s or the test's timeout.
    assert (status, time.monotonic() - started < 10) == (200, True)
    assert body.startswith(b"retry: 2000\nevent: update\ndata: ")
    reconnected, said, _ = await refused(scene.api, "/api/stream", headers)
    assert (reconnected, said) == (401, "token expired")
    tried("keep a stream open past the token's expiry", "stream ends, then 401", "ended, 401")


async def test_metrics_and_health_are_open_on_their_own_bind_and_not_on_the_api(
    scene: Scene,
) -> None:
    assert scene.metrics != scene.api
    status, _, metrics = await get_raw(scene.metrics, "/metrics/", {})
    assert status == 200
    assert b'lepton_nodes{state="alive"} 1.0' in metrics
    # Cluster totals: no job, dataset or model of any tenant is named.
    for name in (f"{A}-running", f"{B}-data", f"{B}-churn", "secret-job"):
        assert name.encode() not in metrics
    status, _, health = await get_raw(scene.metrics, "/healthz", {})
    assert (status, json.loads(health)["status"]) == (200, "ok")
    for path in ("/metrics/", "/healthz"):
        assert (await get_raw(scene.api, path, {}))[0] == 401
        assert (await get_raw(scene.api, path))[0] == 404  # an operator's token: not here
    for path in ("/", "/api/jobs", "/api/stream", "/login"):
        assert (await get_raw(scene.metrics, path))[0] == 404
    tried("/metrics and /healthz", "open on their bind, 404 on the API's", "as expected")
