"""Values handed to logging calls, checked and converted: numbers to float, arrays to what the core bins,
nested dicts to flat names."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from stepwire.names import MAX_NAME_BYTES, check_name
from stepwire.tensors import check_tensor, cpu_view, is_tensor

HIST_DTYPES = (np.float16, np.float32, np.float64)
"""Float dtypes the core bins as they are (integers are widened to float64)."""


def count_text(n: float) -> str:
    """1234567 -> "1.2 M"."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(int(n))


def to_float(key: str, value: object) -> float:
    """A number as float, or TypeError naming ``key`` (describing a tensor, never formatting its values: the repr
    of a device tensor reads it back, a synchronisation)."""
    if is_tensor(value):
        if value.numel() == 1 and value.device.type == "cpu":
            check_tensor(key, value)
            return float(value)
        raise TypeError(f"value for {key!r} must be a real number or a one-element tensor, got a tensor of shape "
                        f"{tuple(value.shape)} ({value.dtype} on {value.device})")
    if isinstance(value, (numbers.Real, np.bool_)) or (isinstance(value, np.ndarray) and value.ndim == 0
                                                        and value.dtype.kind in "biuf"):
        return float(value)
    raise TypeError(f"value for {key!r} must be a real number, got {type(value).__name__}: {value!r:.80}")


def float_array(key: str, values: object) -> npt.NDArray[Any]:
    """A contiguous float16/32/64 array for binning, or TypeError naming ``key``."""
    try:
        arr = np.ascontiguousarray(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"histogram values for {key!r} are not an array of numbers: {exc}") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.type not in HIST_DTYPES:
        raise TypeError(f"histogram values for {key!r} must be float16/32/64 or integers, got dtype {arr.dtype}")
    return arr


def _is_sequence(value: object) -> bool:
    """A list, tuple or 1-d array/tensor: what ``flatten(..., sequences=True)`` expands by index."""
    if isinstance(value, (list, tuple)):
        return True
    return (isinstance(value, np.ndarray) or is_tensor(value)) and getattr(value, "ndim", 0) == 1


def flatten(data: Mapping[Any, Any], prefix: str = "", *, sep: str = "/", sequences: bool = False,
            keep_empty: bool = False, key_check: Callable[[object], str] | None = check_name,
            ancestors: tuple[int, ...] = ()) -> dict[Any, Any]:
    """Nested mappings as flat names: ``{"a": {"b": x}}`` as ``{"a/b": x}``, the one rule every logging surface
    uses, with the upstream's differences as parameters.

    ``sep`` joins the levels (W&B uses ``"."``); with ``sequences`` lists, tuples and 1-d arrays or tensors expand
    by index (``{"a": [x, y]}`` as ``a/0``, ``a/1``, as Ignite's handlers do); with ``keep_empty`` an empty nested
    mapping stays as a value (ClearML's parameters). ``key_check`` validates the key of every nested level
    (default: a series name's rule, leaving top-level keys as given for the caller to check; ``None`` accepts any
    key, as ``str``). A dict inside itself, or one nested deeper than a name can be long, raises ``ValueError``
    naming the key (never ``RecursionError``).
    """
    out: dict[Any, Any] = {}
    ancestors = (*ancestors, id(data))
    for key, value in data.items():
        nested: Mapping[Any, Any] | None = None
        if isinstance(value, Mapping):
            nested = value
        elif sequences and _is_sequence(value):
            nested = {str(i): value[i] for i in range(len(value))}
        if nested is None or (keep_empty and not nested):
            out[f"{prefix}{key}" if prefix or key_check is None else key] = value
            continue
        name = f"{prefix}{key_check(key) if key_check is not None else key}"
        if id(value) in ancestors:
            raise ValueError(f"the dict under {name!r:.80} contains itself")
        if len(name.encode("utf-8")) >= MAX_NAME_BYTES:
            raise ValueError(f"names under {name[:60]!r}... would be longer than {MAX_NAME_BYTES} bytes")
        out.update(flatten(nested, f"{name}{sep}", sep=sep, sequences=sequences, keep_empty=keep_empty,
                           key_check=key_check, ancestors=(*ancestors, id(value))))
    return out


@dataclass
class SortedValues:
    """The values of one ``log()`` call by where they go: ``scalars`` as floats, ``hists`` (name, array to bin,
    bfloat16 flag) with ``hist_sources`` (name, what was passed) for CPU arrays and tensors, ``device_scalars`` and
    ``device_hists`` for tensors on a device, ``images`` for ``stepwire.Image`` values."""

    scalars: dict[str, float] = field(default_factory=dict)
    hists: list[tuple[str, npt.NDArray[Any], bool]] = field(default_factory=list)
    hist_sources: list[tuple[str, object]] = field(default_factory=list)
    device_scalars: dict[str, Any] = field(default_factory=dict)
    device_hists: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)


def sort_values(data: Mapping[Any, Any]) -> SortedValues:
    """``data`` (nested dicts flattened) checked and sorted by kind; raises ``TypeError``/``ValueError`` naming the
    first bad key, before anything is logged."""
    from stepwire.media import Image

    out = SortedValues()
    for key, value in flatten(data).items():
        name = check_name(key)
        if isinstance(value, Image):
            out.images[name] = value
            continue
        if is_tensor(value):
            check_tensor(name, value)
        if is_tensor(value) and value.device.type != "cpu":
            (out.device_scalars if value.ndim == 0 else out.device_hists)[name] = value
        elif is_tensor(value) and value.ndim > 0:
            out.hists.append((name, *cpu_view(name, value)))
            out.hist_sources.append((name, value))
        elif isinstance(value, np.ndarray) and value.ndim > 0:
            out.hists.append((name, float_array(name, value), False))
            out.hist_sources.append((name, value))
        else:
            out.scalars[name] = to_float(name, value)
    return out
