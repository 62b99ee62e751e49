"""The one exception type for bad user input; the CLI turns it into one line and exit code 2."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Bad input from the user (config, names, missing assets). Its message is the whole report."""


class StudyFailed(UserError):
    """A study that could not go on (its workers all stopped with an error): one line, exit code 1 as for a study
    whose trials all failed."""

    exit_code = 1


class ConfigWarning(UserWarning):
    """A config key that has no effect on this run (e.g. an option of another strategy); the CLI prints one line."""


class StudyNotice(UserWarning):
    """What a study is waiting for (e.g. a killed worker's heartbeat to go stale); the CLI prints one line."""


def optional_import(module: str, needed_for: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say in one line which extra installs it (a missing package is the
    user's installation, not a bug)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{needed_for} needs the package {module}, which is not installed: pip install "
                        f"'tl_research[{extra}]' (or: pip install {module})") from None
