"""Stores behind the collector: the interface and the embedded DuckDB default."""

from stepwire.store.base import Reader, RunRecord, ScalarPoints, SeriesRecord, Store, SummaryEntry

__all__ = ["Reader", "RunRecord", "ScalarPoints", "SeriesRecord", "Store", "SummaryEntry"]
