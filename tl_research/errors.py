"""The one exception type for bad user input; the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, names, missing assets). Its message is the whole report."""


class ConfigWarning(UserWarning):
    """A config key that has no effect on this run (e.g. an option of another strategy); the CLI prints one line."""


class StudyNotice(UserWarning):
    """What a study is waiting for (e.g. a killed worker's heartbeat to go stale); the CLI prints one line."""
