"""The store interface: what the collector writes through and what readers read through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from stepwire.collector.decode import BatchError, DecodedBatch
from stepwire.histogram import Histogram


@dataclass
class RunRecord:
    """A run as stored: ``created``/``finished`` in seconds since the Unix epoch (``finished`` 0 while running)."""

    id: str
    project: str
    name: str
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    status: str = "running"
    finished: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SeriesRecord:
    """One series name of a run: its kind (``"scalar"``/``"histogram"``), ranks and stored items."""

    name: str
    kind: str
    ranks: list[int]
    items: int


@dataclass
class ScalarPoints:
    """Points of one scalar series, sorted by (step, rank, logged order)."""

    step: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    wall_time: npt.NDArray[np.float64]
    rank: npt.NDArray[np.uint32]

    @classmethod
    def empty(cls) -> ScalarPoints:
        """No points."""
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64), np.empty(0, np.uint32))

    @classmethod
    def concat(cls, parts: Sequence[ScalarPoints]) -> ScalarPoints:
        """Concatenate and sort by (step, rank), keeping logged order within ties."""
        if not parts:
            return cls.empty()
        step = np.concatenate([p.step for p in parts])
        value = np.concatenate([p.value for p in parts])
        wall = np.concatenate([p.wall_time for p in parts])
        rank = np.concatenate([p.rank for p in parts])
        order = np.lexsort((rank, step))
        return cls(step[order], value[order], wall[order], rank[order])

    @classmethod
    def join(cls, parts: Sequence[ScalarPoints]) -> ScalarPoints:
        """Concatenate pieces that are in order already (as a paged read yields them), without sorting."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.step for p in parts]), np.concatenate([p.value for p in parts]),
                   np.concatenate([p.wall_time for p in parts]), np.concatenate([p.rank for p in parts]))

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, sel: slice | npt.NDArray[Any]) -> ScalarPoints:
        return ScalarPoints(self.step[sel], self.value[sel], self.wall_time[sel], self.rank[sel])


POINT_BYTES = 28
"""Memory of one scalar point read back: int64 step, float64 value and wall time, uint32 rank."""


def whole_steps(pieces: Iterable[ScalarPoints]) -> Iterator[ScalarPoints]:
    """Pieces of a series in step order, re-cut so that no step spans two pieces (what per-step aggregation
    needs): each piece's last step is held back until the next piece shows whether it goes on."""
    carry: ScalarPoints | None = None
    for piece in pieces:
        if len(piece) == 0:
            continue
        if carry is not None:
            piece = ScalarPoints.join([carry, piece])
        cut = int(np.searchsorted(piece.step, piece.step[-1], side="left"))
        if cut:
            yield piece[:cut]
        carry = piece[cut:]
    if carry is not None:
        yield carry


class StoreDamaged(OSError):
    """The store file cannot be opened as a stepwire store (damaged, or some other file): nothing was changed."""


class StoreUnavailable(RuntimeError):
    """The store cannot do this now (DuckDB out of memory, or its database being reopened after a failure) and
    changed nothing: try again later. The collector answers UNAVAILABLE, which clients retry, spooling meanwhile."""


@dataclass
class SummaryEntry:
    """Last (value at the highest step; lowest rank on ties), min and max of a scalar series, NaN-aware."""

    name: str
    last: float
    min: float
    max: float
    count: int
    last_step: int


@dataclass
class TextEntry:
    """A text logged under ``name`` at ``step`` by ``rank``."""

    name: str
    step: int
    rank: int
    wall_time: float
    text: str


@dataclass
class ArtifactEntry:
    """A stored file: ``size`` in bytes, logged at ``step`` by ``rank``."""

    name: str
    size: int
    step: int
    rank: int
    wall_time: float
    sha256: str


@dataclass
class MediaEntry:
    """A media record (image, audio, video, HTML, Plotly figure, table) logged under ``name`` at ``step`` by
    ``rank``: its content is the blob ``sha256`` of ``size`` bytes, of type ``mime``."""

    name: str
    step: int
    rank: int
    wall_time: float
    kind: str
    mime: str
    caption: str
    width: int
    height: int
    size: int
    sha256: str


class Reader(Protocol):
    """Read side of a store: local (DuckDB file) or remote (Query service)."""

    def runs(self, project: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        ...

    def series(self, run_id: str) -> list[SeriesRecord]:
        """Series names of a run."""
        ...

    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        """Points of one scalar series (with ``start_step <= step < end_step``), sorted by (step, rank, logged
        order): all in memory at once, ``POINT_BYTES`` per point."""
        ...

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None) -> Iterator[ScalarPoints]:
        """The same points as ``scalars``, in order, as pieces of a bounded number of points; no step spans two
        pieces (a piece is larger only when one step has more points than a page)."""
        ...

    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        """Histograms of one series, by (step, rank)."""
        ...

    def summary(self, run_id: str) -> list[SummaryEntry]:
        """Last/min/max of every scalar series."""
        ...

    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        """Texts of a run (of ``name`` only, if given), by step."""
        ...

    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        """Files stored for a run, by name."""
        ...

    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        """The content of one artifact, in pieces (``KeyError`` if there is none)."""
        ...

    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        """Media records of a run (of ``name``, at ``step``, of ``kind``, if given), by (name, step, rank)."""
        ...

    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        """The content of a media record of the run, in pieces (``KeyError`` if the run has none with it)."""
        ...


class Store(ABC):
    """A writable store. Implementations serialise writes themselves; every method is thread-safe."""

    shared: bool = False
    """True when other collectors write to the same store (PostgreSQL): then a collector judges only the run ranks
    whose clients it has served, and leaves the others to their own node's collector (``leases.mark_crashed``)."""

    @abstractmethod
    def open_run(self, run: RunRecord, rank: int = 0, world_size: int = 1) -> RunRecord:
        """Create the run, or join it (another rank, or a resume): rank 0's project, name, tags and config win;
        ``meta["ranks"]`` records each rank's status and ``meta["world_size"]`` how many ranks log to it."""

    @abstractmethod
    def update_run(self, run_id: str, config: dict[str, Any] | None = None, status: str | None = None,
                   finished: float | None = None, replace_config: bool = False,
                   meta: dict[str, Any] | None = None, rank: int = 0) -> None:
        """Merge ``config`` (or replace it) and ``meta`` into the run; ``status`` is ``rank``'s: the run is
        failed if any rank failed, else crashed if any rank crashed, finished once every rank of the world
        finished, else running."""

    @abstractmethod
    def last_data(self, run_id: str, rank: int) -> float:
        """When data of ``rank`` of the run last arrived (seconds since the epoch; the run's start if none)."""

    @abstractmethod
    def append(self, batch: DecodedBatch) -> bool:
        """Store a batch atomically; False (and nothing written) if (stream, sequence) is already stored."""

    def append_many(self, batches: Sequence[DecodedBatch]) -> list[bool | BatchError]:
        """Store several batches (the collector's group commit), one result per batch in order: True stored,
        False a duplicate by (stream, sequence) (stored before, or earlier in ``batches``), or the ``BatchError``
        that refused that batch alone (the others are stored all the same). A store failure (``StoreUnavailable``)
        raises. A store that can overrides this to store them all in one transaction (then a failure stores none);
        this default stores them one by one (a failure may leave the first ones stored: their retries are then
        duplicates, so every batch is still stored once)."""
        results: list[bool | BatchError] = []
        for batch in batches:
            try:
                results.append(self.append(batch))
            except BatchError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def runs(self, project: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""

    @abstractmethod
    def live_runs(self, run_ids: Collection[str] = ()) -> list[RunRecord]:
        """The runs a crash check looks at, oldest first: every run with a rank still running (and perhaps a few
        without one: callers check the ranks), and the runs ``run_ids`` whatever their status. Unlike ``runs``
        it does not grow with every run the store ever kept."""

    @abstractmethod
    def series(self, run_id: str) -> list[SeriesRecord]:
        """Series names of a run."""

    @abstractmethod
    def scalars(self, run_id: str, name: str, ranks: Sequence[int] | None = None, start_step: int | None = None,
                end_step: int | None = None) -> ScalarPoints:
        """Points of one scalar series (with ``start_step <= step < end_step``), all at once."""

    def scalar_pages(self, run_id: str, name: str, ranks: Sequence[int] | None = None,
                     start_step: int | None = None, end_step: int | None = None) -> Iterator[ScalarPoints]:
        """The points of ``scalars`` in pieces, no step spanning two (a store that can read less at a time
        overrides this)."""
        yield self.scalars(run_id, name, ranks, start_step, end_step)

    @abstractmethod
    def histograms(self, run_id: str, name: str, ranks: Sequence[int] | None = None) -> list[Histogram]:
        """Histograms of one series, by (step, rank)."""

    @abstractmethod
    def summary(self, run_id: str) -> list[SummaryEntry]:
        """Last/min/max of every scalar series."""

    @abstractmethod
    def add_text(self, run_id: str, entry: TextEntry, dedup: tuple[str, int] | None = None) -> bool:
        """Store one text; False (nothing stored) if ``dedup`` = (stream, sequence) was stored already."""

    @abstractmethod
    def put_artifact(self, run_id: str, name: str, step: int, rank: int, wall_time: float,
                     chunks: Iterable[bytes]) -> ArtifactEntry:
        """Store a file under ``name`` (replacing one of that name) from its pieces."""

    @abstractmethod
    def delete_artifact(self, run_id: str, name: str) -> None:
        """Remove an artifact (``KeyError`` if there is none)."""

    @abstractmethod
    def texts(self, run_id: str, name: str | None = None) -> list[TextEntry]:
        """Texts of a run (of ``name`` only, if given), by step."""

    @abstractmethod
    def artifacts(self, run_id: str) -> list[ArtifactEntry]:
        """Files stored for a run, by name."""

    @abstractmethod
    def read_artifact(self, run_id: str, name: str) -> Iterator[bytes]:
        """The content of one artifact, in pieces (``KeyError`` if there is none)."""

    @abstractmethod
    def put_media(self, run_id: str, entry: MediaEntry, chunks: Iterable[bytes]) -> MediaEntry:
        """Store a media record from its pieces (checked by ``stepwire.mediatypes.check_content``; its size,
        sha256, width and height are taken from the content), replacing one at the same (rank, name, step)."""

    @abstractmethod
    def media(self, run_id: str, name: str | None = None, step: int | None = None,
              kind: str | None = None) -> list[MediaEntry]:
        """Media records of a run (of ``name``, at ``step``, of ``kind``, if given), by (name, step, rank)."""

    @abstractmethod
    def read_media(self, run_id: str, sha256: str) -> Iterator[bytes]:
        """The content of a media record of the run, in pieces (``KeyError`` if the run has none with it)."""

    @abstractmethod
    def close(self) -> None:
        """Commit and release the store."""
