"""The monitor's web apps: the API, stream and dashboard behind a credential
(:mod:`~services.monitor.web.api`, :mod:`~services.monitor.web.auth`), and the open
``/metrics`` and ``/healthz`` on a bind of their own (:mod:`~services.monitor.web.open`)."""

from services.monitor.web.api import create_web_app
from services.monitor.web.auth import Authenticator
from services.monitor.web.basics import BadRequestError, encode_json
from services.monitor.web.denials import Denials
from services.monitor.web.open import create_open_app

__all__ = [
    "Authenticator",
    "BadRequestError",
    "Denials",
    "create_open_app",
    "create_web_app",
    "encode_json",
]
