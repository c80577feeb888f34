"""itwinai's API on stepwire: ``stepwire.compat.itwinai.loggers`` mirrors ``itwinai.loggers``.

Code written against itwinai's loggers runs on stepwire by changing the import::

    from stepwire.compat.itwinai.loggers import Logger, LoggersCollection, MLFlowLogger, StepwireLogger

``Logger`` is itwinai's abstract base (subclass it as with itwinai); ``StepwireLogger`` and the name-alikes of
itwinai's loggers (``ConsoleLogger``, ``MLFlowLogger``, ``WandBLogger``, ``TensorBoardLogger``,
``Prov4MLLogger``) all store into stepwire runs. docs/compat/itwinai.md maps each kind and call onto stepwire.
"""

from stepwire.compat.itwinai import loggers

__all__ = ["loggers"]
