"""Finding stored runs the way ``Task.get_task``/``Task.get_tasks`` select tasks."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stepwire.api import Api, RunView
from stepwire.compat.clearml.unsupported import unsupported


def tags_match(run_tags: Sequence[str], wanted: Sequence[str]) -> bool:
    """ClearML's tag filter: ``"-tag"`` (or ``"__$not", "tag"``) is "tag absent"; terms join with OR until
    ``"__$all"``/``"__$and"`` switches to AND (``"__$any"``/``"__$or"`` back to OR); each operator starts a
    new group and the groups join with AND: ``["__$all", "a", "b", "__$or", "c", "-d"]`` is
    ``a AND b AND (c OR NOT d)``."""
    have = set(run_tags)
    groups: list[tuple[str, list[bool]]] = [("or", [])]
    negate = False
    for tag in wanted:
        if tag in ("__$all", "__$and", "__$any", "__$or"):
            groups.append(("and" if tag in ("__$all", "__$and") else "or", []))
            continue
        if tag == "__$not":
            negate = True
            continue
        if tag.startswith("__$"):
            raise ValueError(f"unknown tag operator {tag!r} (ClearML's are __$all, __$and, __$any, __$or, __$not)")
        absent = tag.startswith("-")
        name = tag[1:] if absent else tag
        groups[-1][1].append((name in have) != (absent != negate))
        negate = False
    return all((all(terms) if op == "and" else any(terms)) for op, terms in groups if terms)


STATUS_NAMES = {"running": "in_progress", "finished": "completed", "failed": "failed", "crashed": "stopped"}
"""ClearML's status names of stepwire's run statuses."""

_ORDER_FIELDS: dict[str, Callable[[RunView], Any]] = {
    "created": lambda v: v.created, "started": lambda v: v.created,
    "last_update": lambda v: max(v.created, v.finished), "last_change": lambda v: max(v.created, v.finished),
    "completed": lambda v: v.finished, "name": lambda v: v.name, "status": lambda v: v.status,
    "id": lambda v: v.id, "project": lambda v: v.project, "project.name": lambda v: v.project,
}


def apply_filter(views: list[RunView], task_filter: Mapping[str, Any] | None) -> list[RunView]:
    """``views`` filtered and ordered by the ClearML ``task_filter`` keys stepwire has: ``status`` (ClearML
    names), ``type`` (task types), ``tags``, ``id``, ``name`` (a regular expression), ``project_name``,
    ``order_by`` (fields ``created``, ``started``, ``last_update``, ``last_change``, ``completed``, ``name``,
    ``status``, ``id``, ``project``, ``-`` first for descending), ``page_size``/``page``; other keys warn once
    and are ignored."""
    if not task_filter:
        return views
    out = list(views)
    for key, value in task_filter.items():
        wanted = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else value
        if key == "status":
            out = [v for v in out if STATUS_NAMES.get(v.status, v.status) in wanted]
        elif key == "type":
            out = [v for v in out if str(v.meta.get("task_type", "training")) in wanted]
        elif key == "tags":
            out = [v for v in out if tags_match(v.tags, wanted)]
        elif key == "id":
            out = [v for v in out if v.id in wanted]
        elif key == "name":
            pattern = re.compile(str(value))
            out = [v for v in out if pattern.search(v.name)]
        elif key == "project_name":
            out = [v for v in out if v.project in wanted]
        elif key not in ("order_by", "page_size", "page"):
            unsupported(f"task_filter key {key!r}", "the filter is not applied")
    order = task_filter.get("order_by")
    for field in reversed([order] if isinstance(order, str) else list(order or [])):
        name = str(field).lstrip("-+")
        if name not in _ORDER_FIELDS:
            unsupported(f"task_filter order_by field {name!r}", "the order is not applied")
            continue
        out.sort(key=_ORDER_FIELDS[name], reverse=str(field).startswith("-"))
    if "page_size" in task_filter:
        size, page = int(task_filter["page_size"]), int(task_filter.get("page", 0))
        out = out[page * size:(page + 1) * size]
    return out


def find_run(api: Api, task_id: str | None, project_name: str | None, task_name: str | None,
             tags: Sequence[str] | None, task_filter: Mapping[str, Any] | None) -> RunView:
    """The run ``Task.get_task`` means: by id, else the newest one of that project and/or exact name."""
    if task_id is None and project_name is None and task_name is None:
        raise ValueError("Task.get_task needs task_id, or project_name and/or task_name")
    if task_id is not None:
        try:
            return api.run(task_id)
        except KeyError:
            raise ValueError(f"Task ID '{task_id}' could not be found") from None
    views = [v for v in api.runs(project_name) if (task_name is None or v.name == task_name)
             and (not tags or tags_match(v.tags, tags))]
    views = apply_filter(views, {k: v for k, v in (task_filter or {}).items() if k != "order_by"})
    if not views:
        raise ValueError(f"no task found with project_name={project_name!r}, task_name={task_name!r}"
                         + (f", tags={list(tags)!r}" if tags else ""))
    return sorted(views, key=lambda v: v.created)[-1]


def find_runs(api: Api, task_ids: Sequence[str] | None, project_name: str | Sequence[str] | None,
              task_name: str | None, tags: Sequence[str] | None,
              task_filter: Mapping[str, Any] | None) -> list[RunView]:
    """The runs ``Task.get_tasks`` means, oldest first."""
    views = api.runs()
    if task_ids is not None:
        ids = set(task_ids)
        return apply_filter([v for v in views if v.id in ids], task_filter)
    if project_name is not None:
        projects = {project_name} if isinstance(project_name, str) else set(project_name)
        views = [v for v in views if v.project in projects]
    if task_name is not None:
        pattern = re.compile(task_name)
        views = [v for v in views if pattern.search(v.name)]
    if tags:
        views = [v for v in views if tags_match(v.tags, tags)]
    return apply_filter(views, task_filter)


def run_to_continue(api: Api, project: str, name: str | None, reuse_last_task_id: bool | str,
                    continue_last_task: bool | str | int) -> RunView | None:
    """The run ``Task.init(continue_last_task=...)`` continues: the id given (as ``continue_last_task`` or
    ``reuse_last_task_id``), else the newest run of that project and name; None if there is none."""
    task_id = continue_last_task if isinstance(continue_last_task, str) else (
        reuse_last_task_id if isinstance(reuse_last_task_id, str) else None)
    if task_id is not None:
        try:
            return api.run(task_id)
        except KeyError:
            raise ValueError(f"Task ID '{task_id}' could not be found: nothing to continue") from None
    views = [v for v in api.runs(project) if name is None or v.name == name]
    return sorted(views, key=lambda v: v.created)[-1] if views else None


def last_iteration(view: RunView) -> int | None:
    """The highest step of any scalar of ``view`` but the single values (None if it has none)."""
    steps = [int(view.scalars(s.name)["step"].max()) for s in view.series()
             if s.kind == "scalar" and s.items and not s.name.startswith("Summary/")]
    return max(steps) if steps else None
