"""Lepton's schemas in a schema registry, and the ids a codec in registry mode resolves.

Registry-aware tools (serializers, Connect converters, ksqlDB, Flink's registry formats)
frame a value as ``00`` + a 4-byte big-endian schema id + the Avro body, and find the schema
by id in a registry. :func:`register_contract` puts every Lepton schema there, with its
history, as subjects named by the usual topic-name strategy (``<topic>-value``, the topic
with the installation's prefix), each subject's compatibility set to what the contract
promises; :class:`RegistryIds` gives a :class:`~lepton.contract.codec.Codec` the ids
(:meth:`~lepton.contract.codec.Codec.with_registry`), so that Lepton reads that framing on
its input topics and, where chosen, writes it.

The registry is asked over its Confluent-compatible REST API (Apicurio Registry serves it
at ``/apis/ccompat/v7``). Ids are looked up once and cached (a bounded number of them);
a registry that does not answer raises :class:`RegistryUnavailableError`, a
``ConnectionError`` that a service's consumer retries with back-off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from lepton.contract import schemas_dir
from lepton.contract.codec import EventSchema, load_schema_files
from lepton.contract.topics import ALL_TOPICS, Namespace
from lepton.errors import ConfigError, RequestError, UnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from pydantic import SecretStr

    from lepton.config import Settings
    from lepton.contract.codec import Codec

__all__ = [
    "CONTRACT_COMPATIBILITY",
    "RegistryIds",
    "RegistryRefusedError",
    "RegistryUnavailableError",
    "SchemaRegistry",
    "SubjectRegistered",
    "attach_registry",
    "register_contract",
    "subject",
]

log = logging.getLogger("lepton.contract.registry")

# The contract's promise (tests/unit/test_schema_compat.py): a new schema reads data written
# with every earlier version kept in schemas/history/, not only the one before it.
CONTRACT_COMPATIBILITY = "BACKWARD_TRANSITIVE"
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Ids come from message bytes: cache a bounded number, forgetting the least recently used.
_CACHED_IDS = 1024
# An id the registry did not have may be registered later: ask again after this long.
_UNKNOWN_FOR_S = 60.0
# A schema is a few kilobytes; a list of versions a few hundred bytes.
_MAX_ANSWER_BYTES = 1 << 20
# After the registry failed to answer, decoding fails fast (retried by the consumer) for
# this long instead of blocking the event loop on every message.
_DOWN_FOR_S = 2.0


class RegistryUnavailableError(UnavailableError, ConnectionError):
    """The schema registry did not answer (or answered with a server error). A
    ``ConnectionError``, so that a consumer waits it out instead of dead-lettering."""

    hint = "check LEPTON_SCHEMA_REGISTRY_URL and that the registry is up"


class RegistryRefusedError(RequestError):
    """The schema registry refused a request: a schema incompatible with the subject's
    earlier versions, wrong credentials, or a URL that is not a registry's API."""


def subject(topic: str) -> str:
    """The subject of a topic's values under the topic-name strategy."""
    return f"{topic}-value"


class SchemaRegistry:
    """A client of a Confluent-compatible schema registry's REST API (synchronous: it is
    asked once per schema id, and by the CLI)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        auth = None
        if username is not None:
            secret = "" if password is None else password.get_secret_value()
            auth = httpx.BasicAuth(username, secret)
        base = httpx.URL(url.rstrip("/"))
        # For messages: a password given in the URL itself is never shown.
        self.url = str(base.copy_with(username=None, password=None))
        self._http = httpx.Client(
            base_url=base,
            auth=auth,
            timeout=timeout_s,
            headers={"Accept": _CONTENT_TYPE, "Content-Type": _CONTENT_TYPE},
        )

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> SchemaRegistry:
        found = url or settings.schema_registry_url
        if found is None:
            raise ConfigError(
                "no schema registry configured", "set LEPTON_SCHEMA_REGISTRY_URL or --registry"
            )
        return cls(
            found,
            username=settings.schema_registry_username,
            password=settings.schema_registry_password,
        )

    def __enter__(self) -> SchemaRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON answer, or None for a 404; raises for anything else that is not 2xx."""
        try:
            with self._http.stream(method, path, json=body) as response:
                content = bytearray()
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > _MAX_ANSWER_BYTES:
                        raise RegistryRefusedError(
                            f"schema registry {self.url} answered {method} {path} with more "
                            f"than {_MAX_ANSWER_BYTES} bytes"
                        )
        except httpx.TransportError as exc:
            # The exception's text names the address only; credentials travel in a header.
            raise RegistryUnavailableError(
                f"schema registry {self.url} did not answer: {exc}"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code >= 500:
            raise RegistryUnavailableError(
                f"schema registry {self.url} answered {response.status_code} to {method} {path}"
            )
        if response.status_code >= 400:
            raise RegistryRefusedError(
                f"schema registry {self.url} refused {method} {path}: "
                f"{response.status_code} {_message(bytes(content))}"
            )
        return json.loads(content)

    def versions(self, subject_name: str) -> list[tuple[int, str]]:
        """The subject's versions, oldest first, as (schema id, schema text); empty when
        there is no such subject."""
        path = f"/subjects/{quote(subject_name, safe='')}/versions"
        numbers = self._call("GET", path)
        found = []
        for number in numbers or ():
            version = self._call("GET", f"{path}/{int(number)}")
            if version is not None:
                found.append((int(version["id"]), str(version["schema"])))
        return found

    def register(self, subject_name: str, schema: str) -> int:
        """Adds ``schema`` as the subject's next version (the registry checks the
        subject's compatibility); its id."""
        path = f"/subjects/{quote(subject_name, safe='')}/versions"
        found = self._call("POST", path, {"schema": schema})
        if found is None:
            raise RegistryRefusedError(f"schema registry {self.url} has no {path}")
        return int(found["id"])

    def compatibility(self, subject_name: str) -> str | None:
        """The subject's own compatibility level (None: the registry's default applies)."""
        found = self._call("GET", f"/config/{quote(subject_name, safe='')}")
        if found is None:
            return None
        level = found.get("compatibilityLevel", found.get("compatibility"))
        return None if level is None else str(level)

    def set_compatibility(self, subject_name: str, level: str) -> None:
        self._call("PUT", f"/config/{quote(subject_name, safe='')}", {"compatibility": level})

    def schema(self, schema_id: int) -> str | None:
        """The schema text with ``schema_id``; None when there is none."""
        found = self._call("GET", f"/schemas/ids/{schema_id}")
        return None if found is None else str(found["schema"])


def _message(content: bytes) -> str:
    """The registry's own error message, cut short (it comes from outside)."""
    try:
        text = str(json.loads(content).get("message", ""))
    except (ValueError, AttributeError):
        text = content.decode("utf-8", "replace")
    return text[:500]


def _schema_text(definition: Mapping[str, Any]) -> str:
    """The text a schema is registered with: its ``.avsc`` JSON, compact (its docs and
    defaults kept, for the registry's readers)."""
    return json.dumps(definition, separators=(",", ":"))


def _registered(registry: SchemaRegistry, subject_name: str) -> dict[bytes, int]:
    """The subject's schema ids by single-object fingerprint: what a version is, whatever
    tool registered it and however it laid out the text."""
    return {_fingerprint_of(text): schema_id for schema_id, text in registry.versions(subject_name)}


def _versions(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every schema's versions by full name, oldest first: ``schemas/history/<n>/`` in the
    order of n, then the current one."""
    history = sorted(root.glob("history/*/*.avsc"), key=lambda path: int(path.parent.name))
    versions: dict[str, list[dict[str, Any]]] = {}
    # load_schema_files sorts its paths: one call per file keeps the history's order.
    for paths in [*([path] for path in history), sorted(root.glob("*.avsc"))]:
        for definition in load_schema_files(paths):
            versions.setdefault(_full_name(definition), []).append(definition)
    return versions


def _full_name(definition: Mapping[str, Any]) -> str:
    name = str(definition["name"])
    namespace = definition.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@dataclass(frozen=True, slots=True)
class SubjectRegistered:
    """What :func:`register_contract` did for one subject."""

    subject: str
    ids: tuple[int, ...]  # of its versions, oldest first
    added: int  # versions registered by this run (0 on a re-run)
    compatibility: Literal["set", "kept"]


def register_contract(
    registry: SchemaRegistry, names: Namespace, root: Path | None = None
) -> list[SubjectRegistered]:
    """Registers every topic's value schema with its history, oldest first, under
    ``<topic>-value``, the subject's compatibility set first to the contract's
    (:data:`CONTRACT_COMPATIBILITY`), so that the registry checks each version as Lepton's
    own test does. Idempotent: a version already there (the same parsing canonical form,
    however its text is laid out) is not registered again."""
    versions = _versions(root or schemas_dir())
    done = []
    for declared in ALL_TOPICS:
        name = subject(names.topic(declared.name).name)
        kept = registry.compatibility(name) == CONTRACT_COMPATIBILITY
        if not kept:
            registry.set_compatibility(name, CONTRACT_COMPATIBILITY)
        have = _registered(registry, name)
        ids, added = [], 0
        for definition in versions[declared.event]:
            schema = EventSchema.from_definition(definition)
            found = have.get(schema.fingerprint)
            if found is None:
                found = registry.register(name, _schema_text(definition))
                have[schema.fingerprint] = found
                added += 1
            ids.append(found)
        done.append(SubjectRegistered(name, tuple(ids), added, "kept" if kept else "set"))
    return done


class RegistryIds:
    """The registry ids of a codec's schemas, for :meth:`Codec.with_registry`.

    :meth:`prepare` reads every version of every topic's subject (so that decoding
    rarely asks the registry); an id seen later is asked for by id and cached. With
    ``write``, records are framed with the id of their current schema's version.
    """

    def __init__(
        self, registry: SchemaRegistry, codec: Codec, names: Namespace, *, write: bool
    ) -> None:
        self._registry = registry
        self._codec = codec
        self._names = names
        self._write = write
        self._writer_ids: dict[str, int] = {}
        # id -> fingerprint, or (None, until when) for an id the registry did not have.
        self._known: OrderedDict[int, bytes | tuple[None, float]] = OrderedDict()
        self._down_until = 0.0

    def prepare(self) -> None:
        """Reads the ids of every topic's subject; raises :class:`RegistryUnavailableError`
        while the registry does not answer, and (in write mode) :class:`ConfigError` for a
        current schema that is not registered."""
        for declared in ALL_TOPICS:
            name = subject(self._names.topic(declared.name).name)
            have = _registered(self._registry, name)
            for fingerprint, schema_id in have.items():
                self._remember(schema_id, fingerprint)
            current = have.get(self._codec.schema(declared.event).fingerprint)
            if current is not None:
                self._writer_ids[declared.event] = current
            elif self._write:
                raise ConfigError(
                    f"the current {declared.event} schema is not registered under {name} in "
                    f"{self._registry.url}",
                    "run `lepton contract register` (with the same LEPTON_TOPIC_PREFIX)",
                )

    def writer_id(self, name: str) -> int | None:
        return self._writer_ids.get(name) if self._write else None

    def fingerprint(self, schema_id: int) -> bytes | None:
        now = time.monotonic()
        known = self._known.get(schema_id)
        if isinstance(known, bytes):
            self._known.move_to_end(schema_id)
            return known
        if known is not None and known[1] > now:
            return None
        if now < self._down_until:
            raise RegistryUnavailableError(
                f"schema registry {self._registry.url} did not answer a moment ago"
            )
        try:
            text = self._registry.schema(schema_id)
        except RegistryUnavailableError:
            self._down_until = now + _DOWN_FOR_S
            raise
        if text is None:
            self._remember(schema_id, (None, now + _UNKNOWN_FOR_S))
            return None
        found = _fingerprint_of(text)
        self._remember(schema_id, found)
        return found

    def _remember(self, schema_id: int, value: bytes | tuple[None, float]) -> None:
        self._known[schema_id] = value
        self._known.move_to_end(schema_id)
        while len(self._known) > _CACHED_IDS:
            self._known.popitem(last=False)


# A fingerprint no schema has (a registry schema that is not an Avro record).
_NONE_OF_OURS = b""


def _fingerprint_of(text: str) -> bytes:
    """The single-object fingerprint of a schema the registry holds."""
    try:
        return EventSchema.from_definition(json.loads(text)).fingerprint
    except Exception:  # any schema fastavro cannot take is none of Lepton's
        return _NONE_OF_OURS


async def attach_registry(codec: Codec, settings: Settings, names: Namespace) -> Codec:
    """``codec`` in registry mode when ``LEPTON_SCHEMA_REGISTRY_URL`` is set (unchanged
    otherwise), its ids looked up first: while the registry does not answer, this waits,
    with back-off, rather than fail the service."""
    if settings.schema_registry_url is None:
        if settings.schema_registry_write:
            raise ConfigError(
                "LEPTON_SCHEMA_REGISTRY_WRITE is set without a registry",
                "set LEPTON_SCHEMA_REGISTRY_URL too",
            )
        return codec
    ids = RegistryIds(
        SchemaRegistry.from_settings(settings), codec, names, write=settings.schema_registry_write
    )
    for attempt in itertools.count():
        try:
            await asyncio.to_thread(ids.prepare)
        except RegistryUnavailableError as exc:
            delay = min(0.5 * 2**attempt, 30.0)
            log.warning("%s; trying again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
        else:
            break
    return codec.with_registry(ids)
