"""Envelope encryption and export neutralisation."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.data.keys import tenant_key, unwrap_data_key, wrap_data_key
from lepton.data.reading import export_csv, neutralise_formula
from lepton.services.ingest.security import ColumnSealer

MASTER = os.urandom(32)


def test_tenant_keys_differ_and_wrapping_is_bound_to_the_dataset() -> None:
    assert tenant_key(MASTER, "a") != tenant_key(MASTER, "b")
    data_key = os.urandom(32)
    wrapped = wrap_data_key(MASTER, "acme", "d", data_key)
    assert data_key not in wrapped
    assert unwrap_data_key(MASTER, "acme", "d", wrapped) == data_key
    with pytest.raises(InvalidTag):
        unwrap_data_key(MASTER, "other", "d", wrapped)
    with pytest.raises(InvalidTag):
        unwrap_data_key(MASTER, "acme", "e", wrapped)


def test_sealed_values_hold_no_plaintext_and_open_with_the_unwrapped_key() -> None:
    sealer = ColumnSealer(MASTER, "acme", "d")
    sealed = sealer.seal("phone", pd.Series(["13800138000", None, "13800138000"]))
    assert sealed.iloc[1] is pd.NA or sealed.iloc[1] is None
    first = bytes.fromhex(sealed.iloc[0][2:])
    assert b"13800138000" not in first
    assert sealed.iloc[0] != sealed.iloc[2]  # a fresh nonce per value
    key = unwrap_data_key(MASTER, "acme", "d", sealer.wrapped_key)
    assert AESGCM(key).decrypt(first[:12], first[12:], b"phone") == b"13800138000"
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(first[:12], first[12:], b"other_column")


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert neutralise_formula(cell) == "'" + cell
    assert neutralise_formula("fine") == "fine"
    assert neutralise_formula(-2) == -2


def test_export_leaves_numbers_alone() -> None:
    out = io.StringIO()
    export_csv(pd.DataFrame({"n": [-1.5], "s": ["=cmd|' /C calc'!A0"]}), out)
    assert out.getvalue().splitlines()[1].startswith("-1.5,'=cmd")
