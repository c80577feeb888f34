"""Ignite's ClearML, W&B and TensorBoard loggers on stepwire: change only the import.

::

    from stepwire.compat.ignite.clearml_logger import *      # was: from ignite.handlers.clearml_logger import *
    from stepwire.compat.ignite.wandb_logger import *        # was: from ignite.handlers.wandb_logger import *
    from stepwire.compat.ignite.tensorboard_logger import *  # was: from ignite.handlers.tensorboard_logger import *

Each module exports what its upstream module's ``__all__`` does, takes the same arguments, and stores every
series under the name and step that upstream logger gives it. The handlers are stepwire's own
(``stepwire.ignite.handlers``), each module binds its logger's naming policy (``stepwire.ignite.naming``):

- ClearMLLogger: outputs ``tag/key1/...`` (title ``tag`` or ``tag/key1``), ``{tag/}lr/{i}``,
  ``{tag/}weights_norm/{module}/{rest}``, histograms ``{tag/}weights_{module}/{rest}``;
- WandBLogger: outputs ``tag/key1/...``, ``{tag/}lr/group_{i}`` (it has no weight handlers);
- TensorboardLogger: outputs ``tag/key1/...``, ``{tag/}lr/group_{i}``, ``{tag/}weights_norm/{name, . as /}``,
  histograms ``{tag/}weights/{name, . as /}``.

docs/compat/ignite.md has the full table and what is not supported.
"""
