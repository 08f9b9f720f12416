"""The SDK's transport to the monitor's JSON API (the read model built from every topic).

Each request carries a bearer token the client mints itself from its signing key
(``LEPTON_SIGNING_KEY``; on the local stack an operator's, derived from the master key),
valid a few minutes only, so a token that leaks from a log or a proxy is soon worthless.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from lepton.errors import InvalidTokenError, LeptonError, MonitorUnavailable
from lepton.runtime.identity import LOCAL_OPERATOR, signing_key

if TYPE_CHECKING:
    from lepton.config import Settings
    from lepton.contract.identity import SigningKey

_TOKEN_TTL_S = 300
_RENEW_BEFORE_S = 60  # a token is replaced this long before it expires


class MonitorTransport:
    """GETs on the monitor's ``/api`` with a short-lived token; connects on first use."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.monitor_url
        self._settings = settings
        self._http: httpx.AsyncClient | None = None
        self._key: SigningKey | None = None
        self._token = ""
        self._renew_at = 0.0

    def _authorization(self) -> dict[bytes, bytes]:
        now = time.time()
        if now >= self._renew_at:
            if self._key is None:
                self._key = signing_key(self._settings, LOCAL_OPERATOR)
            expires_at = int(now) + _TOKEN_TTL_S
            self._token = self._key.token(expires_at)
            self._renew_at = expires_at - _RENEW_BEFORE_S
        # As UTF-8 bytes: a principal's name (free text) may lie outside ASCII.
        return {b"Authorization": f"Bearer {self._token}".encode()}

    async def get(self, path: str, **params: Any) -> Any:
        """The JSON answer to ``path`` with the ``params`` that are not None."""
        # Without a key (no stack, no LEPTON_SIGNING_KEY) the request still goes out: a
        # monitor that does not answer is the first thing to say, and one that does
        # refuses it, which is when the missing key is the reason.
        missing: LeptonError | None = None
        try:
            headers = self._authorization()
        except LeptonError as exc:
            missing, headers = exc, {}
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url, timeout=10.0)
        query = {name: value for name, value in params.items() if value is not None}
        try:
            response = await self._http.get(path, params=query, headers=headers)
        except httpx.TransportError as exc:
            raise MonitorUnavailable(
                f"the monitor at {self.url} does not answer ({type(exc).__name__})",
                "start the services with `lepton up`, or set LEPTON_MONITOR_URL",
            ) from None
        if response.status_code != 200:
            try:
                reason = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                reason = response.text[:200]
            if response.status_code == 401 and missing is not None:
                raise missing
            if response.status_code == 401:
                raise InvalidTokenError(
                    f"the monitor refused this client's token for {path}: {reason}",
                    "the monitor checks tokens with its installation's master key: give this "
                    "client a LEPTON_SIGNING_KEY issued by that installation",
                )
            raise LeptonError(f"the monitor refused {path}: {reason}")
        return response.json()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
