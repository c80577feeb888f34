"""Plots and tables as media content: a figure as Plotly JSON (or a matplotlib figure as a PNG), a table as
checked, copied columns encoded as Parquet (on the media thread)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_TABLE_COLUMNS = 4096
"""Columns a table may have."""


def _json_default(value: object) -> object:
    """numpy arrays and scalars, dates and times in a figure given as a dict, as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def plot_json(name: str, figure: Any) -> tuple[str, bytes]:
    """(kind, content) of a figure: a Plotly figure, its dict or JSON text as Plotly JSON; a matplotlib figure
    as a PNG image (rendered here, on the caller's thread: matplotlib is not thread-safe)."""
    if hasattr(figure, "savefig") and not hasattr(figure, "to_plotly_json"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png")
        return "image", buf.getvalue()
    if hasattr(figure, "to_json") and hasattr(figure, "to_plotly_json"):
        text = figure.to_json()
    elif isinstance(figure, Mapping):
        try:
            text = json.dumps(figure, default=_json_default, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"figure {name!r} is not JSON: {exc}") from None
    elif isinstance(figure, (str, bytes)):
        text = figure.decode("utf-8") if isinstance(figure, bytes) else figure
    else:
        raise TypeError(f"figure {name!r} must be a Plotly figure, its dict or JSON, or a matplotlib figure; got "
                        f"{type(figure).__name__}")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"figure {name!r} is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
        raise ValueError(f'figure {name!r} must be a JSON object with a "data" list (a Plotly figure)')
    return "plotly", text.encode("utf-8")


def table_columns(name: str, data: Any, columns: Sequence[str] | None = None) -> dict[str, npt.NDArray[Any]]:
    """A table as a dict of equally long column arrays (copies): a pandas DataFrame, a dict of columns, or rows
    (a list of sequences, with ``columns``; or a list of dicts)."""
    if hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "__getitem__"):  # a DataFrame
        cols = {str(c): np.array(data[c].to_numpy(), copy=True) for c in data.columns}
    elif isinstance(data, Mapping):
        cols = {c: np.array(list(v) if not isinstance(v, np.ndarray) else v, copy=True) for c, v in data.items()}
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        rows = list(data)
        if rows and all(isinstance(r, Mapping) for r in rows):
            keys = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
            cols = {k: _column([r.get(k) for r in rows]) for k in keys}
        else:
            if columns is None:
                width = len(rows[0]) if rows else 0
                columns = [f"c{i}" for i in range(width)]
            columns = list(columns)
            for i, r in enumerate(rows):
                if len(r) != len(columns):
                    raise ValueError(f"table {name!r}: row {i} has {len(r)} cells, the table {len(columns)} columns")
            cols = {c: _column([r[j] for r in rows]) for j, c in enumerate(columns)}
    else:
        raise TypeError(f"table {name!r} must be a DataFrame, a dict of columns, a list of rows or a CSV path; got "
                        f"{type(data).__name__}")
    if not cols:
        raise ValueError(f"table {name!r} has no columns")
    if len(cols) > MAX_TABLE_COLUMNS:
        raise ValueError(f"table {name!r} has {len(cols)} columns, more than {MAX_TABLE_COLUMNS}")
    lengths = {len(v) for v in cols.values()}
    for c, v in cols.items():
        if not isinstance(c, str) or not c:
            raise ValueError(f"table {name!r}: column names must be non-empty strings, got {c!r:.80}")
        if v.ndim != 1:
            raise ValueError(f"table {name!r}: column {c!r} must be one-dimensional, got shape {v.shape}")
    if len(lengths) > 1:
        raise ValueError(f"table {name!r}: columns differ in length ({sorted(lengths)})")
    return cols


def _column(values: list[Any]) -> npt.NDArray[Any]:
    """The cells of a column as one 1-D array (an object array when numpy would make more dimensions)."""
    arr = np.array(values)
    if arr.ndim != 1:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    return arr


def _sql_column(v: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A column DuckDB reads as one type: numbers, booleans, strings, datetimes (missing cells: None, NaN, pandas'
    NA, as NULL in strings and booleans, NaN in mixed numbers); anything else as its str()."""
    if v.dtype.kind in "biufUMm":
        return v.astype(str).astype(object) if v.dtype.kind == "U" else v
    out = np.empty(len(v), dtype=object)
    values = [None if _missing(x) else x for x in v.tolist()]
    present = [x for x in values if x is not None]
    if all(isinstance(x, str) for x in present) or all(isinstance(x, bool) for x in present):
        out[:] = values
        return out
    if all(isinstance(x, (int, float)) for x in present):
        return np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    out[:] = [None if x is None else str(x) for x in values]
    return out


def _missing(x: object) -> bool:
    """None, NaN, and pandas' NA/NaT: a missing cell (NULL in the table)."""
    return x is None or (isinstance(x, float) and x != x) or type(x).__name__ in ("NAType", "NaTType")


def encode_parquet(cols: Mapping[str, npt.NDArray[Any]] | Path) -> bytes:
    """A Parquet file of the columns (or of a CSV file, its types inferred by DuckDB)."""
    import tempfile

    import duckdb

    with tempfile.TemporaryDirectory(prefix="stepwire-table-") as tmp, duckdb.connect() as con:
        out = Path(tmp) / "t.parquet"
        target = "'" + str(out).replace("'", "''") + "'"
        if isinstance(cols, Path):
            con.execute(f"COPY (SELECT * FROM read_csv_auto(?)) TO {target} (FORMAT parquet)", [str(cols)])
        else:
            con.register("t", {k: _sql_column(v) for k, v in cols.items()})
            con.execute(f"COPY (SELECT * FROM t) TO {target} (FORMAT parquet)")
        return out.read_bytes()
