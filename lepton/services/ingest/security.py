"""Envelope encryption of sensitive columns while a version is written.

Each version gets a fresh 256-bit data key; each sensitive value is sealed with AES-256-GCM
under it (a random 96-bit nonce per value, the column name as associated data, so a value
cannot be moved to another column unnoticed). The data key is stored only wrapped by the
owner's tenant key (:func:`lepton.data.keys.wrap_data_key`), itself derived from the master
key, so the database never holds a key that opens the data.
"""

from __future__ import annotations

import os

import pandas as pd
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.data.keys import wrap_data_key

__all__ = ["ColumnSealer"]

_NONCE = 12


class ColumnSealer:
    """Seals the values of sensitive columns for one version."""

    def __init__(self, master: bytes, owner: str, dataset: str) -> None:
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._cipher = AESGCM(self._data_key)
        self.wrapped_key = wrap_data_key(master, owner, dataset, self._data_key)

    def seal(self, column: str, values: pd.Series) -> pd.Series:
        """Values as PostgreSQL bytea text (``\\x`` + hex of nonce and ciphertext)."""
        aad = column.encode()
        encrypt = self._cipher.encrypt

        def one(value: object) -> str | None:
            if value is None or value is pd.NA or (isinstance(value, float) and value != value):
                return None
            nonce = os.urandom(_NONCE)
            return "\\x" + (nonce + encrypt(nonce, _text(value).encode(), aad)).hex()

        return pd.Series([one(value) for value in values], index=values.index, dtype="string")


def _text(value: object) -> str:
    # The reader parses this back with the column's logical type.
    if isinstance(value, pd.Timestamp):
        return str(value.isoformat())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
