"""The ingest service's settings: the shared ones plus what loading and protecting data needs.

Each field reads ``LEPTON_<NAME>`` like every Lepton setting (see :mod:`lepton.config`).
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 - pydantic resolves the annotations at runtime

from pydantic import Field, SecretStr

from lepton.config import Settings
from lepton.services.ingest.input_bounds import Bounds

__all__ = ["IngestSettings"]


class IngestSettings(Settings):
    """Settings of ``lepton-ingest``."""

    ingest_roots: list[Path] = Field(
        default_factory=list,
        description="LEPTON_INGEST_ROOTS: JSON list of directories that local sources may be "
        'read from, e.g. ["/data/in"]; a path outside them (or with "..") is rejected. '
        "Empty: no local files at all.",
    )
    ingest_remote_protocols: list[str] = Field(
        default_factory=list,
        description='LEPTON_INGEST_REMOTE_PROTOCOLS: JSON list of fsspec protocols (e.g. ["s3"]) '
        "that sources may use; the protocol's fsspec driver must be installed. Empty: none.",
    )
    ingest_postgres_sources: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="LEPTON_INGEST_POSTGRES_SOURCES: JSON object naming the PostgreSQL "
        'databases that postgres sources may query, {"warehouse": "postgresql://..."}; '
        "requests carry the name, never credentials. Never logged.",
    )
    ingest_max_file_bytes: int = Field(
        default=20 * 1024**3,
        gt=0,
        description="LEPTON_INGEST_MAX_FILE_BYTES: largest source accepted, in bytes, before "
        "and after decompression.",
    )
    ingest_max_compression_ratio: float = Field(
        default=100.0,
        gt=1,
        description="LEPTON_INGEST_MAX_COMPRESSION_RATIO: a gzip source that inflates more "
        "than this many times is rejected as a decompression bomb.",
    )
    ingest_chunk_bytes: int = Field(
        default=8 * 1024**2,
        ge=64 * 1024,
        description="LEPTON_INGEST_CHUNK_BYTES: bytes of CSV or JSON Lines parsed at a time; "
        "with ingest_chunk_rows it bounds the service's memory, whatever the file size.",
    )
    ingest_chunk_rows: int = Field(
        default=100_000,
        ge=1,
        description="LEPTON_INGEST_CHUNK_ROWS: rows read at a time from Parquet and "
        "PostgreSQL sources.",
    )
    ingest_max_line_bytes: int = Field(
        default=1024**2,
        ge=1024,
        description="LEPTON_INGEST_MAX_LINE_BYTES: longest line (a CSV row or a JSON Lines "
        "record) of a source, in bytes once decompressed; checked while the bytes stream, so "
        "a file with no newline is refused after this many bytes.",
    )
    ingest_max_columns: int = Field(
        default=1000,
        ge=1,
        le=1600,
        description="LEPTON_INGEST_MAX_COLUMNS: columns a source, and the cleaned dataset "
        "(outlier flags included), may have; at most 1600, PostgreSQL's limit of a table.",
    )
    ingest_max_cells: int = Field(
        default=1_000_000_000,
        ge=1,
        description="LEPTON_INGEST_MAX_CELLS: cells (rows times columns) the sources of one "
        "request may hold in all; bounds what a version costs to store and to load whole.",
    )
    ingest_max_column_name_bytes: int = Field(
        default=256,
        ge=1,
        description="LEPTON_INGEST_MAX_COLUMN_NAME_BYTES: longest column name, in bytes of "
        "UTF-8 (names travel in every data.ready answer).",
    )
    ingest_max_categories: int = Field(
        default=10_000,
        ge=1,
        description="LEPTON_INGEST_MAX_CATEGORIES: distinct values a category column may "
        "have (and a spec's categories list, and a column whose mode fills gaps).",
    )
    ingest_max_reason_bytes: int = Field(
        default=1024,
        ge=128,
        description="LEPTON_INGEST_MAX_REASON_BYTES: a rejection's reason is cut to this many "
        "bytes, so no input is echoed back whole.",
    )
    ingest_max_sample_chars: int = Field(
        default=200,
        ge=16,
        description="LEPTON_INGEST_MAX_SAMPLE_CHARS: a value or column name quoted in a "
        "reason is cut to this many characters.",
    )
    ingest_max_reject_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="LEPTON_INGEST_MAX_REJECT_FRACTION: when more than this share of the rows "
        "read fails the spec's rules, the spec contradicts the data and the request is "
        "rejected instead of stored.",
    )
    ingest_max_join_rows: int = Field(
        default=5_000_000,
        ge=1,
        description="LEPTON_INGEST_MAX_JOIN_ROWS: rows a joined (right-hand) source may have; "
        "it is held in memory while the first source streams past it.",
    )
    ingest_stats_sample_rows: int = Field(
        default=1_000_000,
        ge=1000,
        description="LEPTON_INGEST_STATS_SAMPLE_ROWS: values per column kept to compute "
        "medians and quartiles (exact up to this many rows, a uniform sample beyond).",
    )
    ingest_query_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="LEPTON_INGEST_QUERY_TIMEOUT_S: longest a postgres source's query may "
        "run (statement_timeout); it runs read-only in any case.",
    )
    ingest_region: str | None = Field(
        default=None,
        description="LEPTON_INGEST_REGION: region this ingest stores data in, used when a "
        "request names none.",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="LEPTON_MASTER_KEY: base64 of 32 random bytes; per-tenant keys that wrap "
        "each version's data key are derived from it. Needed for sensitive columns (ingest "
        "rejects them without it) and by readers that decrypt them. Never logged.",
    )

    def input_bounds(self) -> Bounds:
        """The limits on what a source may hold, from these settings."""
        return Bounds(
            line_bytes=self.ingest_max_line_bytes,
            columns=self.ingest_max_columns,
            cells=self.ingest_max_cells,
            name_bytes=self.ingest_max_column_name_bytes,
            categories=self.ingest_max_categories,
            reason_bytes=self.ingest_max_reason_bytes,
            sample_chars=self.ingest_max_sample_chars,
        )
