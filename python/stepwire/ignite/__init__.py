"""PyTorch Ignite integration: ``StepwireLogger`` and its handlers, drop-in peers of Ignite's loggers.

The handlers are Ignite's, written once (``handlers``) and named by a small policy per logger (``naming``):
stepwire's own logger names as Ignite's ClearML handlers do, with stepwire's name being ``title/series``:

| handler | name |
| --- | --- |
| OutputHandler | ``tag/key`` (nested keys joined with ``/``) |
| OptimizerParamsHandler | ``{tag/}{param_name}/{group index}`` |
| WeightsScalarHandler | ``{tag/}weights_{reduction}/{module}/{rest of the parameter name}`` |
| GradsScalarHandler | ``{tag/}grads_{reduction}/{module}/{rest}`` |
| WeightsHistHandler | ``{tag/}weights_{module}/{rest}`` |
| GradsHistHandler | ``{tag/}grads_{module}/{rest}`` |

Ignite's own ClearML, W&B and TensorBoard loggers, with their names, are in ``stepwire.compat.ignite``.
"""

from stepwire.ignite.handlers import (
    GradsHistHandler,
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    RunLogger,
    StepwireLogger,
    WeightsHistHandler,
    WeightsScalarHandler,
)
from stepwire.ignite.saver import StepwireSaver

__all__ = [
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "RunLogger",
    "StepwireLogger",
    "StepwireSaver",
    "WeightsHistHandler",
    "WeightsScalarHandler",
]
