"""ClearML's ``clearml.task_parameters``: a typed parameter set to connect to a task.

ClearML builds it on ``attrs``; here subclasses of ``TaskParameters`` become dataclasses (no extra dependency)
with the same surface: fields declared with ``param(...)``/``percent_param(...)`` (a ``default=`` makes one
optional), checked when an instance is created, ``to_dict()``, ``update_from_dict(d)`` and ``connect(task)``
(the parameters go to section ``General``)::

    class MyParams(TaskParameters):
        iterations = param(type=int, desc="Number of iterations to run", range=(0, 100000), default=10)
        target_accuracy = percent_param(desc="The target accuracy of the model", default=0.9)

    params = MyParams(iterations=500)
    params.connect(task)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["TaskParameters", "param", "percent_param", "range_validator"]

Validator = Callable[[Any, Any, Any], None]
"""``validator(instance, attribute, value)``, raising on a bad value (ClearML's attrs validators' signature)."""


@dataclasses.dataclass(frozen=True)
class _Attribute:
    """What a validator gets as ``attribute``: the field's name."""

    name: str


def range_validator(min_value: float | None, max_value: float | None) -> Validator:
    """A validator: the value must lie in ``[min_value, max_value]`` (None: no limit on that side)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
            raise ValueError(f"{attribute.name} must be in range [{min_value}, {max_value}]")

    return check


def _type_validator(kind: type) -> Validator:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name} must be {kind.__name__}, got {type(value).__name__} {value!r}")

    return check


def param(validator: Validator | Sequence[Validator] | None = None, range: tuple[Any, Any] | None = None,
          type: type | None = None, desc: str | None = None, metadata: Mapping[str, Any] | None = None,
          default: Any = dataclasses.MISSING) -> Any:
    """A parameter of a ``TaskParameters`` class: checked by ``validator`` (one or a list), ``range``
    (``(min, max)``, inclusive) and ``type``; ``desc`` and ``metadata`` are kept in the field's metadata."""
    checks = [] if validator is None else list(validator) if isinstance(validator, (list, tuple)) else [validator]
    if type is not None:
        checks.append(_type_validator(type))
    if range is not None:
        checks.append(range_validator(*range))
    meta = {**dict(metadata or {}), "desc": desc, "validators": tuple(checks)}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def percent_param(validator: Validator | Sequence[Validator] | None = None, desc: str | None = None,
                  metadata: Mapping[str, Any] | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A float parameter in ``[0, 1]``."""
    return param(validator, range=(0, 1), type=float, desc=desc, metadata=metadata, default=default)


class _DataclassMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _DataclassMeta:
        annotations = dict(namespace.get("__annotations__", {}))
        for key, value in namespace.items():
            if isinstance(value, dataclasses.Field) and key not in annotations:
                annotations[key] = Any  # attrs-style fields need no annotation
        namespace["__annotations__"] = annotations
        cls = super().__new__(mcs, name, bases, namespace)
        return dataclasses.dataclass(cls)  # type: ignore[arg-type,return-value]


class TaskParameters(metaclass=_DataclassMeta):
    """Base class of a parameter set: subclass it with ``param``/``percent_param`` fields."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            for check in field.metadata.get("validators", ()):
                check(self, _Attribute(field.name), getattr(self, field.name))

    def to_dict(self) -> dict[str, Any]:
        """``{name: value}`` of every parameter."""
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    def update_from_dict(self, source_dict: Mapping[str, Any]) -> None:
        """Set parameters from a dict (``ValueError`` for an unknown name)."""
        for key, value in source_dict.items():
            if not hasattr(self, key):
                raise ValueError(f"Unknown key {key} in {type(self).__name__} object")
            setattr(self, key, value)

    def connect(self, task: Any) -> Any:
        """Record the parameters with ``task`` (``task.connect(self)``: section ``General``)."""
        return task.connect(self)
