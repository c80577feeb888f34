"""Torch integration: tensors on any device, per-parameter statistics and histograms without synchronising.

Importing this package imports torch; ``import stepwire`` alone does not.
"""

from stepwire.torch.reduce import DeviceReduction, reduce_tensors
from stepwire.torch.watch import ModelStats, WatchHandle, log_model_stats, watch

__all__ = ["DeviceReduction", "ModelStats", "WatchHandle", "log_model_stats", "reduce_tensors", "watch"]
