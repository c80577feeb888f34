"""Tensors as the native core reads them: CPU tensors zero-copy, without importing torch eagerly."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch


def is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    """True if ``value`` is a torch tensor (False whenever torch was never imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def check_tensor(key: str, tensor: Any) -> None:
    """Raise ``TypeError`` naming ``key`` for a tensor that holds no real values to read: complex, sparse (or any
    layout but strided), or on the meta device."""
    import torch

    if tensor.layout != torch.strided:
        raise TypeError(f"value for {key!r} is a {tensor.layout} tensor: pass .to_dense()")
    if tensor.device.type == "meta":
        raise TypeError(f"value for {key!r} is on the meta device: it holds no values")
    if tensor.is_complex():
        raise TypeError(f"value for {key!r} must be real, got a {tensor.dtype} tensor")


def cpu_view(key: str, tensor: Any) -> tuple[npt.NDArray[Any], bool]:
    """A numpy view of a CPU tensor for binning, and whether it holds bfloat16 bit patterns.

    Contiguous float16/float32/float64 tensors are shared, not copied; bfloat16 is viewed as uint16 bits.
    Integer and bool tensors are converted to float64; those ``check_tensor`` refuses raise ``TypeError``.
    """
    import torch

    check_tensor(key, tensor)
    t = tensor.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), True
    if t.dtype in (torch.float16, torch.float32, torch.float64):
        return t.numpy(), False
    if t.is_floating_point():  # e.g. float8: widen exactly
        return t.float().numpy(), False
    return t.double().numpy(), False
