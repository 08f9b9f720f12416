"""The monitor's HTTP side, attacked: no credential, a bad or stolen one, another tenant's
view. The real monitor app on the real broker and PostgreSQL, as a client reaches it.

Every attempt must fail with its specific reason (each is listed in the red team's table),
and each refusal must reach ``lepton.audit``.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer

from lepton import LeptonClient
from lepton.bus import Publisher
from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.identity import IdentityKey, Principal, SigningKey
from lepton.errors import InvalidTokenError, StackError
from lepton.services.monitor.app import MonitorService
from lepton.testing import impersonating, service_codec
from tests.integration.test_monitor import (
    bearer,
    eventually,
    fresh_prefix,
    get_raw,
    heartbeat,
    key_of,
    now_ms,
    operator,
    running,
    settings_for,
    topic,
)
from tests.samples import sample
from tests.security.conftest import RedTeam

pytestmark = pytest.mark.integration

A, B = "acme", "globex"  # "globex" appears in nothing of acme's, so a leak shows
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


def tenant(name: str) -> SigningKey:
    return key_of(Principal("tenant", name))


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
async def scene(
    kafka: KafkaAccess, database_for: Callable[[str], str], identity: IdentityKey
) -> AsyncIterator[Scene]:
    """One monitor that has read both tenants' work (checked with an operator's token)."""
    prefix = fresh_prefix()
    signer = impersonating(identity)  # each record signed by whoever would write it
    async with (
        running(settings_for(kafka, database_for("monitor"), prefix)) as monitor,
        Publisher(kafka, service_codec(identity), source="tests", signer=signer) as publisher,
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


async def audit_events(kafka: KafkaAccess, prefix: str) -> list[dict[str, Any]]:
    """Every event on this monitor's lepton.audit so far (read until a second passes
    without more)."""
    consumer = AIOKafkaConsumer(
        topic(prefix, "lepton.audit").name,
        **kafka.aiokafka(),
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
        return status, page_reason(body.decode()), challenge
    return status, json.loads(body)["error"], challenge


def page_reason(page: str) -> str:
    """Why the sign-in page says it was shown."""
    found = re.search(r'<p class="error">(.*?)</p>', page)
    return html.unescape(found.group(1)) if found else "no reason on the page"


def token(key: SigningKey, ttl_s: int = 300) -> str:
    return key.token(int(time.time()) + ttl_s)


def _renamed() -> dict[str, str]:
    forged = token(tenant(B)).replace(f"tenant:{B}", f"tenant:{A}")
    return {"Authorization": f"Bearer {forged}"}


def _cookie(value: str) -> dict[str, str]:
    from lepton.services.monitor.web.auth import session_cookie

    return {"Cookie": f"lepton_session={session_cookie(value)}"}


# Each bad credential (built when the test runs: the master key is the session's) and the
# reason it is refused with.
CREDENTIALS: dict[str, tuple[Callable[[], dict[str, str]], str]] = {
    "no credential": (dict, "no credential"),
    "a wrong token": (lambda: {"Authorization": "Bearer not-a-token"}, "malformed token"),
    "an expired token": (
        lambda: {"Authorization": f"Bearer {token(operator(), -1)}"},
        "token expired",
    ),
    "a token of another master": (
        lambda: {"Authorization": f"Bearer {token(stranger(Principal('operator', 'tests')))}"},
        "token signature does not match",
    ),
    "a tenant's token renamed to another": (_renamed, "token signature does not match"),
    "a Basic credential": (
        lambda: {"Authorization": "Basic b3BlcmF0b3I6cGFzc3dvcmQ="},
        "the Authorization header is not `Bearer <token>`",
    ),
    "an expired session cookie": (lambda: _cookie(token(operator(), -1)), "token expired"),
    "a session cookie that is no token": (
        lambda: {"Cookie": "lepton_session=%%%"},
        "malformed session cookie",
    ),
}


def stranger(principal: Principal) -> SigningKey:
    """``principal``'s key from a master key that is not the installation's."""
    return IdentityKey.generate().derive(principal)


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


def _read_all(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    with _open(url, headers) as response:
        return response.status, response.read()


async def get_json(base: str, path: str, key: SigningKey) -> Any:
    status, _, body = await get_raw(base, path, bearer(key))
    assert status == 200, (path, body)
    return json.loads(body)


@pytest.mark.parametrize("attack", sorted(CREDENTIALS))
async def test_a_bad_credential_is_refused_on_every_route_with_its_reason(
    attack: str, scene: Scene, red_team: RedTeam
) -> None:
    build, reason = CREDENTIALS[attack]
    headers = build()
    for path in ROUTES:
        status, said, challenge = await refused(scene.api, path, headers)
        red_team.check(f"{attack}: GET {path}", f"401 {reason}", f"{status} {said}")
        assert challenge.startswith('Bearer realm="lepton-monitor"'), challenge
        assert f'error_description="{reason}' in challenge, challenge
        assert ('error="invalid_token"' in challenge) == (attack != "no credential")


async def test_a_token_in_the_url_is_never_accepted(scene: Scene, red_team: RedTeam) -> None:
    status, said, _ = await refused(scene.api, f"/api/jobs?token={token(operator())}", {})
    red_team.check("a token in the query string", "401 no credential", f"{status} {said}")


async def test_a_nodes_token_has_no_monitor_view(scene: Scene, red_team: RedTeam) -> None:
    node = key_of(Principal("node", NODE))
    status, said, challenge = await refused(
        scene.api, "/api/jobs", {"Authorization": f"Bearer {token(node)}"}
    )
    red_team.check("a node's token", "403 node:node-shared has no monitor view", f"{status} {said}")
    assert 'error="insufficient_scope"' in challenge


async def test_refusals_are_logged_without_the_token_and_audited(
    kafka: KafkaAccess, scene: Scene, red_team: RedTeam
) -> None:
    forged = token(stranger(Principal("tenant", A)))
    with structlog.testing.capture_logs() as logs:
        await refused(scene.api, "/api/models", {"Authorization": f"Bearer {forged}"})
    (entry,) = [entry for entry in logs if entry["event"] == "refused"]
    assert (entry["reason"], entry["actor"], entry["claimed"], entry["resource"]) == (
        "token signature does not match",
        "anonymous",
        f"tenant:{A}",
        "monitor:GET /api/models",
    )
    assert entry["client"] == "127.0.0.1"
    mac = forged.rsplit(".", 1)[1]
    assert not any(mac in str(value) for value in entry.values())

    async def audited() -> dict[str, Any] | None:
        for event in await audit_events(kafka, scene.prefix):
            if event["resource"] == "monitor:GET /api/models" and "does not match" in (
                event["detail"] or ""
            ):
                return event
        return None

    event = await eventually(audited, what="the refusal on lepton.audit")
    assert (event["actor"], event["tenant"], event["action"]) == ("anonymous", A, "read")
    assert event["detail"] == (
        f"401 token signature does not match; from 127.0.0.1; the token named tenant:{A}"
    )
    assert mac not in json.dumps(event)
    red_team.check(
        "a forged token: the log and lepton.audit",
        "denied",
        f"{event['outcome']}, logged as {entry['event']}, token in neither",
    )


async def test_a_browser_signs_in_with_a_form_and_gets_a_strict_cookie(
    scene: Scene, red_team: RedTeam
) -> None:
    status, _, page = await get_raw(scene.api, "/login", {})
    assert status == 200
    assert '<form method="post" action="/login">' in page.decode()
    # A tenant whose name no cookie or header could carry as it is.
    secret = token(tenant('租户; "甲"'), 120)
    form = urllib.parse.urlencode({"token": secret}).encode()
    status, headers, _ = await post(scene.api, "/login", form)
    assert (status, headers["location"]) == (303, "/")
    cookie = headers["set-cookie"]
    value = cookie.split(";")[0].removeprefix("lepton_session=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=strict"} <= attributes
    max_age = next(int(a.split("=")[1]) for a in attributes if a.startswith("max-age="))
    assert 100 <= max_age <= 120  # as long as the token lives
    status, _, body = await get_raw(scene.api, "/api/whoami", {"Cookie": f"lepton_session={value}"})
    assert (status, json.loads(body)["principal"]) == (200, 'tenant:租户; "甲"')
    status, headers, _ = await post(scene.api, "/logout", Cookie=f"lepton_session={value}")
    assert (status, headers["location"]) == (303, "/login")
    assert "max-age=0" in headers["set-cookie"].lower()
    red_team.check(
        "sign in with the form, then out",
        "303 httponly",
        f"{status} {' '.join(sorted(attributes))}",
    )


ELSEWHERE = "a sign-in from another site's page is refused"


@pytest.mark.parametrize(
    ("attack", "headers", "status", "reason"),
    [
        ("another site's form", {"Sec_Fetch_Site": "cross-site"}, 403, ELSEWHERE),
        ("another origin's form", {"Origin": "http://evil.example"}, 403, ELSEWHERE),
        ("a forged token in the form", {}, 401, "token signature does not match"),
    ],
)
async def test_a_sign_in_from_elsewhere_or_with_a_bad_token_is_refused(
    attack: str,
    headers: dict[str, str],
    status: int,
    reason: str,
    scene: Scene,
    red_team: RedTeam,
) -> None:
    principal = Principal("operator", "tests")
    key = stranger(principal) if status == 401 else key_of(principal)
    answer, answer_headers, page = await post(
        scene.api, "/login", f"token={token(key)}".encode(), **headers
    )
    assert "set-cookie" not in answer_headers
    red_team.check(f"sign in: {attack}", f"{status} {reason}", f"{answer} {page_reason(page)}")


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


async def test_a_tenants_token_sees_only_its_own_work_on_every_route(
    scene: Scene, red_team: RedTeam
) -> None:
    for path in TENANT_ROUTES:
        status, _, body = await get_raw(scene.api, path, bearer(tenant(A)))
        red_team.check(
            f"tenant {A}: GET {path}",
            f"200 {B} seen: False",
            f"{status} {B} seen: {B in body.decode()}",
        )
    mine = tenant(A)
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


async def test_a_tenants_stream_carries_only_its_own_work(scene: Scene, red_team: RedTeam) -> None:
    update = await asyncio.to_thread(first_update, scene.api + "api/stream", bearer(tenant(A)))
    assert {job["job_id"] for job in update["jobs"]} == {f"{A}-running", f"{A}-waiting"}
    assert update["overview"]["pipeline"] is None
    red_team.check(
        f"tenant {A}: the live stream",
        f"{B} seen: False",
        f"{B} seen: {B in json.dumps(update)}",
    )
    everyone = await asyncio.to_thread(first_update, scene.api + "api/stream", bearer())
    assert {job["tenant"] for job in everyone["jobs"]} == {A, B}
    assert everyone["overview"]["pipeline"]["events"] > 0


async def test_an_operators_and_a_services_token_see_every_tenant(scene: Scene) -> None:
    for who in (operator(), key_of(Principal("service", "scheduler"))):
        jobs = (await get_json(scene.api, "/api/jobs", who))["jobs"]
        assert {job["tenant"] for job in jobs} == {A, B}
        datasets = (await get_json(scene.api, "/api/datasets", who))["datasets"]
        assert {d["tenant"] for d in datasets} == {A, B}
        board = (await get_json(scene.api, "/api/models", who))["leaderboard"]
        assert {m["tenant"] for m in board} == {A, B}
        node = await get_json(scene.api, f"/api/nodes/{NODE}", who)
        assert node["running_job_ids"] == [f"{A}-running", f"{B}-running"]
        assert (await get_json(scene.api, f"/api/jobs?tenant={B}", who))["jobs"]


QUEUES_ONLY = f"tenant:{A} may read queue_pending only of subjects {A}/"
# What acme may not read, the answer, and the owner the audit trail names.
FORBIDDEN = [
    (f"/api/jobs?tenant={B}", 403, f"tenant:{A} may not read the jobs of tenant '{B}'", B),
    (f"/api/datasets?tenant={B}", 403, f"tenant:{A} may not read the datasets of tenant '{B}'", B),
    (f"/api/models?tenant={B}", 403, f"tenant:{A} may not read the models of tenant '{B}'", B),
    ("/api/pipeline", 403, "the pipeline (consumer groups, dead letters, audit) covers", None),
    ("/api/series?metric=events_per_s", 403, "the events_per_s series covers every tenant", None),
    ("/api/series?metric=queue_pending&subject=all", 403, QUEUES_ONLY, None),
    (f"/api/series?metric=queue_pending&subject={B}/high", 403, QUEUES_ONLY, B),
    (f"/api/jobs/{B}-running", 404, f"no job '{B}-running' is known", B),
]


async def test_another_tenants_work_is_refused_and_audited(
    kafka: KafkaAccess, scene: Scene, red_team: RedTeam
) -> None:
    for path, status, reason, _ in FORBIDDEN:
        answer, said, _ = await refused(scene.api, path, bearer(tenant(A)))
        red_team.check(f"tenant {A}: GET {path}", f"{status} {reason}", f"{answer} {said}")
    # Another tenant's job answers exactly as a job that does not exist.
    assert (await refused(scene.api, "/api/jobs/none", bearer(tenant(A))))[:2] == (
        404,
        "no job 'none' is known",
    )

    async def all_audited() -> list[dict[str, Any]] | None:
        events = [
            event
            for event in await audit_events(kafka, scene.prefix)
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
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    scene: Scene,
    tmp_path: Path,
    red_team: RedTeam,
) -> None:
    def client(**given: Any) -> LeptonClient:
        settings = Settings(
            **kafka.settings(),
            database_url=database_for("client"),
            topic_prefix=scene.prefix,
            monitor_url=scene.api.rstrip("/"),
            **given,
        )
        return LeptonClient(settings)

    async with client(signing_key=tenant(A).to_text()) as acme:
        assert {job["tenant"] for job in await acme.jobs()} == {A}
        assert [m["tenant"] for m in await acme.models()] == [A]
    # A tenant's name outside ASCII goes in the header as UTF-8.
    async with client(signing_key=tenant("租户甲").to_text()) as other:
        assert await other.jobs() == []
    # Without a key of its own, the local stack's operator (from the master key).
    async with client() as local:
        assert {job["tenant"] for job in await local.jobs()} == {A, B}
        session = await local._monitor.get("/api/whoami")
        assert session["principal"] == "operator:local"
        assert 0 < session["expires_at"] - time.time() * 1000 <= 300_000
    async with client(signing_key=stranger(Principal("tenant", A)).to_text()) as forged:
        with pytest.raises(InvalidTokenError) as refusal:
            await forged.jobs()
    red_team.check(
        "the SDK with a key of another master", "token signature does not match", str(refusal.value)
    )
    # No key at all (no stack in this state directory): the monitor answers, and refuses.
    async with client(state_dir=str(tmp_path), identity_key=None) as keyless:
        with pytest.raises(StackError, match="no identity key"):
            await keyless.jobs()


async def test_the_stream_ends_when_its_token_expires(scene: Scene, red_team: RedTeam) -> None:
    headers = bearer(operator(), ttl_s=2)
    started = time.monotonic()
    status, body = await asyncio.to_thread(_read_all, scene.api + "api/stream", headers)
    # Ended by the expiry, not by a keepalive's 15 s or the test's timeout.
    assert (status, time.monotonic() - started < 10) == (200, True)
    assert body.startswith(b"retry: 2000\nevent: update\ndata: ")
    reconnected, said, _ = await refused(scene.api, "/api/stream", headers)
    red_team.check(
        "keep a stream open past its token's expiry, then reconnect",
        "401 token expired",
        f"ended after {time.monotonic() - started:.1f} s; {reconnected} {said}",
    )


async def test_metrics_and_health_are_open_on_their_own_bind_and_not_on_the_api(
    scene: Scene, red_team: RedTeam
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
        on_api = (await get_raw(scene.api, path))[0]  # an operator's token: still not there
        red_team.check(f"GET {path} on the API's bind with a token", "404", str(on_api))
    for path in ("/", "/api/jobs", "/api/stream", "/login"):
        assert (await get_raw(scene.metrics, path))[0] == 404
