"""TensorBoard's ``SummaryWriter`` on stepwire, and a capture of torch's (and tensorboardX's) own writers.

Code written for ``torch.utils.tensorboard`` runs on stepwire by changing the import::

    from stepwire.compat.tensorboard import SummaryWriter

    writer = SummaryWriter("runs/exp1")          # starts the run "exp1" in project "tensorboard"
    writer.add_scalar("loss/train", 0.5, global_step=3)
    writer.close()                               # finishes it

or keeps torch's writer, whose output is then also stored in a stepwire run::

    from stepwire.compat import tensorboard
    tensorboard.patch(run)                       # every torch/tensorboardX SummaryWriter, old and new
    ...
    tensorboard.unpatch()

Names: the TensorBoard tag (``add_scalars(main, {k: v})``: ``main/k``), steps: ``global_step`` (None is 0, as in
TensorBoard). docs/compat/tensorboard.md maps every method onto what is stored; what cannot be stored warns
once and is counted in ``unsupported_counts()``.

Modules: ``writer`` (the SummaryWriter), ``convert`` (tensors, dataformats, WAV, GIF), ``records`` (raw
histograms, boxes, figures, PR tables, meshes, embeddings), ``events`` (summary protos written to the file writer
directly), ``patch`` (the capture), ``naming`` (TensorBoard's names, or ClearML's), ``clearml_capture`` (what
``stepwire.compat.clearml.Task.init``/``close`` call), ``unsupported`` (warn once, count).
"""

from stepwire.compat.tensorboard.patch import is_patched, patch, patched_run, unpatch
from stepwire.compat.tensorboard.unsupported import unsupported_counts
from stepwire.compat.tensorboard.writer import SummaryWriter

__all__ = ["SummaryWriter", "is_patched", "patch", "patched_run", "unpatch", "unsupported_counts"]
