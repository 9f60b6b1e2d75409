"""Errors meant for users: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem in the user's input (config, data, paths, reward source)."""


class ConfigError(UserError, ValueError):
    """Unknown or badly typed config key."""


class DataError(UserError, ValueError):
    """A dataset file or row that cannot be used; the message names file, line and field."""


class RewardError(UserError, RuntimeError):
    """A reward source raised or returned a non-finite score; the message names source and row."""
