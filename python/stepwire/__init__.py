"""stepwire: metrics logging for large-scale training that costs the training loop next to nothing.

Start a run with :func:`init`, log with ``Run.log``/``log_scalar``/``log_histogram``, read back with :class:`Api`.
"""

from stepwire.api import Api, MediaItem, RunView
from stepwire.histogram import Histogram
from stepwire.media import Image
from stepwire.run import Run
from stepwire.start import init

__version__ = "0.1.0"

__all__ = ["Api", "Histogram", "Image", "MediaItem", "Run", "RunView", "__version__", "init"]
