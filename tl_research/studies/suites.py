"""Benchmark suites: named tasks, each a `data:` section (and optionally a group such as natural / specialized /
structured), swept by a grid study as its `task` axis (`study.suite: <suite.yaml>`). A cell's experiment is the
base with the task's data options set over the base's `data:` section, so options common to every task (image size,
batch size, the protocol) stay in the base. The suite is stored inline in the study, so workers on other machines
read the same tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tl_research.errors import UserError
from tl_research.schema import read_yaml

TASK = "task"  # the grid axis of a suite study
SUITE_KEYS = {"name", "description", "tasks"}
TASK_KEYS = {"data", "group"}


def load_suite(value: Any, base_dir: Path | None = None, where: str = "study.suite") -> dict[str, Any]:
    """A suite as a plain mapping {name, tasks: {task: {group, data}}}: read from a YAML path (relative to
    `base_dir`, then the working directory) or checked as given (a study's stored copy)."""
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        if not path.is_file():
            raise UserError(f"{where}: no suite file {value!r}")
        value = read_yaml(path)
        value.setdefault("name", path.stem)
    if not isinstance(value, dict):
        raise UserError(f"{where}: a suite file path, or a mapping with `tasks`")
    unknown = set(value) - SUITE_KEYS
    if unknown:
        raise UserError(f"{where}.{sorted(unknown)[0]}: unknown key (a suite has {', '.join(sorted(SUITE_KEYS))})")
    tasks = value.get("tasks")
    if not isinstance(tasks, dict) or len(tasks) < 1:
        raise UserError(f"{where}.tasks: a mapping of task names to {{data: ..., group: ...}}")
    out: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        at = f"{where}.tasks.{name}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or not task["data"]:
            raise UserError(f"{at}: a task needs a `data:` mapping (its dataset options)")
        extra = set(task) - TASK_KEYS
        if extra:
            raise UserError(f"{at}.{sorted(extra)[0]}: unknown key (a task has data and group)")
        group = task.get("group")
        if group is not None and not isinstance(group, str):
            raise UserError(f"{at}.group: a name (e.g. natural)")
        out[str(name)] = {"group": group, "data": dict(task["data"])}
    return {"name": str(value.get("name") or "suite"), "description": value.get("description"), "tasks": out}


def _flatten(prefix: str, mapping: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def expand(params: dict[str, Any], suite: dict[str, Any] | None) -> dict[str, Any]:
    """`params` with a `task` value replaced by the task's data options as dotted keys (data.name, data.path …),
    set over the base's data section key by key."""
    if TASK not in params:
        return params
    if suite is None:
        raise UserError("study.grid.task: a task axis needs study.suite")
    task = suite["tasks"].get(params[TASK])
    if task is None:
        raise UserError(f"study.grid.task: {params[TASK]!r} is not a task of suite {suite['name']} "
                        f"(tasks: {', '.join(suite['tasks'])})")
    rest = {k: v for k, v in params.items() if k != TASK}
    return {**_flatten("data", task["data"]), **rest}


def task_axis(suite: dict[str, Any], grid: dict[str, Any] | None) -> dict[str, Any]:
    """The grid with the suite's tasks as its first axis (a `task` list already in the grid picks a subset)."""
    grid = dict(grid or {})
    chosen = grid.pop(TASK, list(suite["tasks"]))
    if not isinstance(chosen, list) or not chosen:
        raise UserError("study.grid.task: a non-empty list of the suite's tasks")
    unknown = [t for t in chosen if t not in suite["tasks"]]
    if unknown:
        raise UserError(f"study.grid.task: {unknown[0]!r} is not a task of suite {suite['name']} "
                        f"(tasks: {', '.join(suite['tasks'])})")
    return {TASK: chosen, **grid}


def groups(suite: dict[str, Any], tasks: list[str]) -> dict[str, list[str]]:
    """Group name -> its tasks among `tasks` (suite order); tasks without a group belong to none."""
    out: dict[str, list[str]] = {}
    for name, task in suite["tasks"].items():
        if name in tasks and task["group"]:
            out.setdefault(task["group"], []).append(name)
    return out
