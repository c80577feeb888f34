"""Independent numpy reference of the bucket scheme, for tests."""

from __future__ import annotations

from collections import Counter

import numpy as np


def bucket_indices(values: np.ndarray, k: int = 3) -> np.ndarray:
    """Bucket index of each finite value, computed from frexp (not from the float bits the core uses)."""
    x = np.asarray(values, dtype=np.float64)
    a = np.abs(x)
    m, e = np.frexp(a)  # a = m * 2**e, m in [0.5, 1)
    exponent = e.astype(np.int64) - 1 + 127
    top = np.floor((m * 2 - 1) * (1 << k)).astype(np.int64)
    normal = (exponent << k) + top
    denormal = np.floor(np.minimum(a, 2.0**-126) * 2.0**149).astype(np.int64) >> (23 - k)
    mag = np.where(a >= 2.0**-126, normal, denormal)
    return np.where(np.signbit(x), -mag, mag)


def reference_histogram(values: np.ndarray, k: int = 3) -> dict[int, int]:
    """{bucket index: count} over the finite values."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    return dict(Counter(bucket_indices(finite, k).tolist()))


def nasty_values(rng: np.random.Generator, n: int, dtype: type) -> np.ndarray:
    """Normal data mixed with NaN, +-Inf, +-0, denormals and extremes of ``dtype``."""
    info = np.finfo(dtype)
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal,
                         info.smallest_normal, info.max, -info.max, info.tiny / 3], dtype=dtype)
    m = min(200, n // 2)
    x[rng.choice(n, m, replace=False)] = rng.choice(specials, m)
    return x
