"""TLS for the local broker: a private CA and a broker certificate for 127.0.0.1/localhost.

Made with the ``cryptography`` package at ``lepton stack up`` when ``LEPTON_STACK_KAFKA_TLS``
is set, as PEM (Kafka reads PEM key stores with ``ssl.keystore.type=PEM``). Clients trust
``ca.pem``; ``broker.pem`` holds the broker's private key (mode 0600) and its certificate.
The CA's own key is not kept: nothing else is ever signed with it, and a new pair is made
when the certificate nears its end.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lepton.devstack._process import write_private

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["BrokerTls", "broker_tls"]

_VALID = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class BrokerTls:
    ca_file: Path  # what clients trust
    keystore: Path  # the broker's key and certificate chain (PEM)


def broker_tls(directory: Path) -> BrokerTls:
    """The CA and broker certificate in ``directory``, made (again) when missing or within
    30 days of expiring."""
    found = BrokerTls(directory / "ca.pem", directory / "broker.pem")
    if found.ca_file.exists() and found.keystore.exists() and not _expiring(found.keystore):
        return found
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lepton local stack CA")])
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    broker = (
        _certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            ca_name,
            key.public_key(),
            now,
        )
        .add_extension(
            # Clients check the host name: the broker is reached at 127.0.0.1 or localhost.
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private(
        found.keystore,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + broker.public_bytes(pem)
        + ca.public_bytes(pem),
    )
    found.ca_file.write_bytes(ca.public_bytes(pem))
    return found


def _certificate(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
    )


def _expiring(keystore: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(keystore.read_bytes())
    except (OSError, ValueError):
        return True
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left < _RENEW_BEFORE
