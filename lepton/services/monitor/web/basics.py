"""What every page of the monitor's web apps shares: validated queries, JSON, security headers."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SECURITY_HEADERS",
    "BadRequestError",
    "Query",
    "SecurityHeaders",
    "encode_json",
    "json_response",
]

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: with it a browser posts the sign-in form with "Origin: null", and
    # the origin is what tells this site's form from another's.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
MAX_TEXT = 256


class BadRequestError(Exception):
    """A malformed query; the message is the reason given to the client."""


class Query:
    """The query parameters of a request, each read once and validated."""

    def __init__(self, request: Request, allowed: Iterable[str]) -> None:
        self._params = request.query_params
        allowed = set(allowed)
        for name in self._params:
            if name not in allowed:
                expected = ", ".join(sorted(allowed)) or "none"
                raise BadRequestError(f"unknown query parameter {name!r}; expected: {expected}")
            if len(self._params.getlist(name)) > 1:
                raise BadRequestError(f"query parameter {name!r} given more than once")

    def text(self, name: str) -> str | None:
        value = self._params.get(name)
        if value is None:
            return None
        if not value or len(value) > MAX_TEXT or not value.isprintable():
            raise BadRequestError(
                f"{name} must be 1 to {MAX_TEXT} printable characters, got {len(value)}"
            )
        return value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        value = self._params.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequestError(f"{name} must be an integer, got {value[:40]!r}") from None
        if not low <= number <= high:
            raise BadRequestError(f"{name} must be between {low} and {high}, got {number}")
        return number

    def choice(self, name: str, choices: Iterable[str], default: str | None) -> str | None:
        value = self._params.get(name)
        if value is None:
            return default
        options = sorted(choices)
        if value not in options:
            raise BadRequestError(f"{name} must be one of {', '.join(options)}, got {value[:40]!r}")
        return value


def _finite(data: Any) -> Any:
    """The data with NaN and infinities (which JSON cannot carry) as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def encode_json(data: Any) -> bytes:
    return json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":")).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(data), status, headers, media_type="application/json")


class SecurityHeaders:
    """Adds the security headers to every response (plain ASGI, so streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self._app(scope, receive, send_with_headers)
