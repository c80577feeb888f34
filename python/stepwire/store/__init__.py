"""Stores behind the collector: the interface and the embedded DuckDB default."""

from stepwire.store.base import (
    ArtifactEntry,
    MediaEntry,
    Reader,
    RunRecord,
    ScalarPoints,
    SeriesRecord,
    Store,
    SummaryEntry,
    TextEntry,
)

__all__ = ["ArtifactEntry", "MediaEntry", "Reader", "RunRecord", "ScalarPoints", "SeriesRecord", "Store",
           "SummaryEntry", "TextEntry"]
