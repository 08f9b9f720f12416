"""Who is asking: bearer tokens, the browser's session cookie, and the sign-in page.

Every route of the monitor's web app needs a credential: a ``lepton.contract.identity``
token in ``Authorization: Bearer <token>``, or the session cookie a browser gets by
posting a token to ``/login``. The cookie holds the token itself, in base64url (the
monitor keeps no sessions: a token proves itself with the master key and ends when it
expires), and is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page sends it), ``Path=/``, lives until the token expires, and is ``Secure`` when
the request came over HTTPS. A token is never accepted in a URL, where history, proxies
and logs would keep it.

A missing, malformed, forged or expired credential is answered 401 with the reason (in
``WWW-Authenticate`` and the body), logged and audited by :class:`Denials`; a node's
token is refused 403: nodes have no business reading the monitor.
"""

from __future__ import annotations

import base64
import binascii
import html
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from lepton.contract.identity import Principal
from lepton.errors import ForgedRecordError, InvalidTokenError
from lepton.services.monitor.web.basics import json_response
from lepton.services.monitor.web.denials import Denial

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Receive, Scope, Send

    from lepton.contract.identity import Verifier
    from lepton.services.monitor.web.denials import Denials

__all__ = [
    "OPEN_PATHS",
    "SESSION_COOKIE",
    "Authenticator",
    "ForbiddenError",
    "Gate",
    "HiddenError",
    "Session",
    "login_page",
    "sign_in",
    "sign_out",
]

SESSION_COOKIE = "lepton_session"
REALM = "lepton-monitor"
# What the sign-in page itself needs; nothing here shows anything of the cluster.
OPEN_PATHS = frozenset({"/login", "/logout", "/static/app.css", "/static/favicon.svg"})
_MAX_FORM_BYTES = 4096
_MAX_TOKEN = 512  # what the verifier accepts at most; longer is not even parsed
_NO_CREDENTIAL = "no credential: send Authorization: Bearer <token>, or sign in at /login"


class ForbiddenError(Exception):
    """A session asked for what it may not see: answered 403 with the reason, audited."""

    def __init__(self, reason: str, owner: str | None = None) -> None:
        super().__init__(reason)
        self.owner = owner  # the tenant whose data was asked for, when one was


class HiddenError(Exception):
    """A session asked for another tenant's job by id: answered 404 as an unknown one
    would be (the id's existence is not confirmed), and audited with the real reason."""

    def __init__(self, reason: str, public: str, owner: str) -> None:
        super().__init__(reason)
        self.public = public
        self.owner = owner


@dataclass(frozen=True, slots=True)
class Session:
    """A proven principal, until its token expires; and what it may see.

    The scoping rule, in one place: a ``tenant:<name>`` principal sees its own tenant's
    jobs, datasets, models, queues, alerts and stream, and nothing that adds up every
    tenant's work; ``operator:*`` and ``service:*`` see everything. (``node:*`` never gets
    a session: :class:`Authenticator` refuses it.)
    """

    principal: Principal
    expires_at: int  # Unix seconds, the token's own

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now

    @property
    def tenant(self) -> str | None:
        """The only tenant whose data this session sees; None: every tenant's."""
        return self.principal.name if self.principal.kind == "tenant" else None

    def sees(self, tenant: str | None) -> bool:
        return self.tenant is None or tenant == self.tenant

    def narrow(self, asked: str | None, what: str) -> str | None:
        """The tenant a query about ``what`` is answered for: the one it asked for (None:
        all) within what this session sees; :class:`ForbiddenError` for another's."""
        if self.tenant is None:
            return asked
        if asked is not None and asked != self.tenant:
            raise ForbiddenError(
                f"{self.principal} may not read the {what} of tenant {asked!r}", asked
            )
        return self.tenant

    def require_everyone(self, what: str) -> None:
        """:class:`ForbiddenError` unless this session sees every tenant: ``what`` adds up
        all tenants' work, or is the pipeline's."""
        if self.tenant is not None:
            raise ForbiddenError(f"{what} covers every tenant: operators and services only")


class CredentialError(Exception):
    """A request's credential is refused; the message says why, ``error`` is the RFC 6750
    code (none when no credential was given at all)."""

    def __init__(self, reason: str, status: int = 401, error: str | None = "invalid_token") -> None:
        super().__init__(reason)
        self.status = status
        self.error = error


class Authenticator:
    """Turns a token into a :class:`Session`, with the master key's verifier."""

    def __init__(self, verifier: Verifier, clock: Callable[[], float] = time.time) -> None:
        self._verifier = verifier
        self.clock = clock

    def session(self, token: str) -> Session:
        """The session a token opens; :class:`CredentialError` saying why it does not."""
        try:
            principal = self._verifier.verify_token(token, self.clock())
        except InvalidTokenError as exc:
            raise CredentialError(str(exc)) from None
        if principal.kind == "node":
            raise CredentialError(
                f"{principal} has no monitor view: nodes only report", 403, "insufficient_scope"
            )
        # verify_token checked the form lpt1.<principal>.<expiry>.<mac>: the expiry is
        # the second part from the end (a principal's name may hold dots).
        return Session(principal, int(token.rsplit(".", 2)[1]))


def claimed_principal(token: str) -> Principal | None:
    """The principal a token names, unproven: for the log and the audit trail only."""
    body = token.rpartition(".")[0]
    tag, _, rest = body.partition(".")
    if tag != "lpt1" or len(token) > _MAX_TOKEN:
        return None
    try:
        return Principal.parse(rest.rpartition(".")[0])
    except ForgedRecordError:
        return None


def session_cookie(token: str) -> str:
    """The cookie's value: the token in base64url, since a principal's name (free text)
    may hold what a cookie cannot (";", quotes, spaces, any script)."""
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _from_cookie(value: str) -> str:
    try:
        padded = value + "=" * (-len(value) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        raise CredentialError("malformed session cookie") from None


def _credential(request: Request) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came in the session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CredentialError("the Authorization header is not `Bearer <token>`")
        return _utf8(token.strip()), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (_from_cookie(cookie), True) if cookie else (None, False)


def _utf8(text: str) -> str:
    """A header's text as its sender wrote it: ASGI reads header bytes as Latin-1, and a
    token naming a principal outside ASCII comes as UTF-8 (the SDK sends it so)."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _denial(request: Request, refused: CredentialError, token: str | None) -> Denial:
    """What the log and the audit trail keep of a refused credential: the principal the
    token named is only a claim, so the actor is anonymous."""
    claimed = claimed_principal(token) if token else None
    return Denial(
        status=refused.status,
        reason=str(refused),
        method=request.method,
        path=request.url.path,
        client=client_of(request),
        actor="anonymous",
        tenant=claimed.name if claimed is not None and claimed.kind == "tenant" else "",
        claimed=str(claimed) if claimed is not None else None,
    )


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gate:
    """ASGI middleware: a request reaches the app only with a valid credential, and the
    app finds its :class:`Session` in ``request.state.session``."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, denials: Denials) -> None:
        self._app = app
        self._authenticator = authenticator
        self._denials = denials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        token: str | None = None
        from_cookie = False
        try:
            token, from_cookie = _credential(request)
            if token is None:
                raise CredentialError(_NO_CREDENTIAL, error=None)
            session = self._authenticator.session(token)
        except CredentialError as refused:
            self._denials.record(_denial(request, refused, token))
            response = refusal(request, refused)
            if from_cookie:
                response.delete_cookie(SESSION_COOKIE, path="/")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = session
        await self._app(scope, receive, send)


def refusal(request: Request, refused: CredentialError) -> Response:
    """The answer to a refused credential: the sign-in page for the dashboard's page, JSON
    for the API, with the reason in ``WWW-Authenticate`` either way (RFC 6750)."""
    reason = str(refused)
    challenge = f"Bearer realm={_quoted(REALM)}"
    if refused.error is not None:
        challenge += f", error={_quoted(refused.error)}"
    challenge += f", error_description={_quoted(reason)}"
    headers = {"www-authenticate": challenge, "cache-control": "no-store"}
    if request.url.path == "/":
        return HTMLResponse(login_page(reason), refused.status, headers)
    return json_response({"error": reason}, refused.status, headers)


def login_page(reason: str | None = None) -> str:
    """The sign-in form; ``reason`` says why the last attempt (or the page) was refused."""
    message = f'<p class="error">{html.escape(reason)}</p>' if reason else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lepton monitor: sign in</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<header><h1>Lepton monitor</h1></header>
<main class="sign-in">
<form method="post" action="/login">
<label for="token">Bearer token</label>
<input id="token" name="token" type="password" autocomplete="off" required maxlength="512">
<button type="submit">Sign in</button>
</form>
{message}
<p class="muted">A token is minted with a signing key, a tenant's own or an operator's
(<code>lepton auth token</code>). The browser keeps it in an HttpOnly cookie until it
expires.</p>
</main>
</body>
</html>
"""


class _FormError(Exception):
    """A sign-in form that cannot be read; the message says why."""


async def _posted_token(request: Request) -> str:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _FormError("the sign-in form must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise _FormError(f"the sign-in form is larger than {_MAX_FORM_BYTES} bytes")
    try:
        fields = urllib.parse.parse_qs(body.decode("ascii"), max_num_fields=4, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise _FormError("the sign-in form is malformed") from None
    tokens = fields.get("token", [])
    if len(tokens) != 1:
        raise _FormError("the sign-in form needs exactly one token")
    return tokens[0].strip()


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this site's own page: another site's page must not
    sign a visitor in (or out) here. A browser says where a request comes from in
    ``Sec-Fetch-Site`` (which no script can set), an older one in ``Origin``."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing to forge a visitor's session with
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def sign_in(request: Request, authenticator: Authenticator, denials: Denials) -> Response:
    """POST /login: a token from the form becomes the session cookie; GET shows the form."""
    if request.method == "GET":
        return HTMLResponse(login_page(), headers={"cache-control": "no-store"})
    token = ""
    try:
        if not _same_origin(request):
            raise CredentialError("a sign-in from another site's page is refused", 403, None)
        try:
            token = await _posted_token(request)
        except _FormError as exc:
            raise CredentialError(str(exc)) from None
        session = authenticator.session(token)
    except CredentialError as refused:
        denials.record(_denial(request, refused, token))
        return HTMLResponse(
            login_page(str(refused)), refused.status, headers={"cache-control": "no-store"}
        )
    response = RedirectResponse("/", 303, headers={"cache-control": "no-store"})
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(token),
        max_age=max(0, int(session.seconds_left(authenticator.clock()))),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def sign_out(request: Request) -> Response:
    """POST /logout: the cookie is dropped (the token itself stays valid until it expires:
    tokens are stateless)."""
    if request.method != "POST" or not _same_origin(request):
        return json_response({"error": "sign out with a POST from the dashboard"}, 405)
    response = RedirectResponse("/login", 303, headers={"cache-control": "no-store"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
