"""The SDK's transport to the monitor's JSON API (the read model built from every topic)."""

from __future__ import annotations

from typing import Any

import httpx

from lepton.errors import LeptonError, MonitorUnavailable


class MonitorTransport:
    """GETs on the monitor's ``/api``; connects on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http: httpx.AsyncClient | None = None

    async def get(self, path: str, **params: Any) -> Any:
        """The JSON answer to ``path`` with the ``params`` that are not None."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url, timeout=10.0)
        query = {name: value for name, value in params.items() if value is not None}
        try:
            response = await self._http.get(path, params=query)
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
            raise LeptonError(f"the monitor refused {path}: {reason}")
        return response.json()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
