"""The monitor's web apps: the API, stream and dashboard behind a credential
(:mod:`~lepton.services.monitor.web.api`, :mod:`~lepton.services.monitor.web.auth`), and the open
``/metrics`` and ``/healthz`` on a bind of their own (:mod:`~lepton.services.monitor.web.open`)."""

from lepton.services.monitor.web.api import create_web_app
from lepton.services.monitor.web.auth import Authenticator
from lepton.services.monitor.web.basics import BadRequestError, encode_json
from lepton.services.monitor.web.denials import Denials
from lepton.services.monitor.web.open import create_open_app

__all__ = [
    "Authenticator",
    "BadRequestError",
    "Denials",
    "create_open_app",
    "create_web_app",
    "encode_json",
]
