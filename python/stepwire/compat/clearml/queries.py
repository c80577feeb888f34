"""Finding stored runs the way ``Task.get_task``/``Task.get_tasks`` select tasks."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from stepwire.api import Api, RunView


def tags_match(run_tags: Sequence[str], wanted: Sequence[str]) -> bool:
    """ClearML's default tag filter: any listed tag present, or any ``"-tag"`` absent (logical OR)."""
    have = set(run_tags)
    for tag in wanted:
        if tag.startswith("__$"):
            raise ValueError(f"tag operator {tag!r} is not supported by stepwire.compat.clearml")
        if (tag[1:] not in have) if tag.startswith("-") else (tag in have):
            return True
    return False


def find_run(api: Api, task_id: str | None, project_name: str | None, task_name: str | None,
             tags: Sequence[str] | None, task_filter: Mapping[str, Any] | None) -> RunView:
    """The run ``Task.get_task`` means: by id, else the newest one of that project and/or exact name."""
    if task_filter:
        raise ValueError("task_filter is not supported by stepwire.compat.clearml")
    if task_id is None and project_name is None and task_name is None:
        raise ValueError("Task.get_task needs task_id, or project_name and/or task_name")
    if task_id is not None:
        try:
            return api.run(task_id)
        except KeyError:
            raise ValueError(f"Task ID '{task_id}' could not be found") from None
    views = [v for v in api.runs(project_name) if (task_name is None or v.name == task_name)
             and (not tags or tags_match(v.tags, tags))]
    if not views:
        raise ValueError(f"no task found with project_name={project_name!r}, task_name={task_name!r}"
                         + (f", tags={list(tags)!r}" if tags else ""))
    return sorted(views, key=lambda v: v.created)[-1]


def find_runs(api: Api, task_ids: Sequence[str] | None, project_name: str | Sequence[str] | None,
              task_name: str | None, tags: Sequence[str] | None,
              task_filter: Mapping[str, Any] | None) -> list[RunView]:
    """The runs ``Task.get_tasks`` means, oldest first."""
    if task_filter:
        raise ValueError("task_filter is not supported by stepwire.compat.clearml")
    views = api.runs()
    if task_ids is not None:
        ids = set(task_ids)
        return [v for v in views if v.id in ids]
    if project_name is not None:
        projects = {project_name} if isinstance(project_name, str) else set(project_name)
        views = [v for v in views if v.project in projects]
    if task_name is not None:
        pattern = re.compile(task_name)
        views = [v for v in views if pattern.search(v.name)]
    if tags:
        views = [v for v in views if tags_match(v.tags, tags)]
    return views
