"""Errors meant for users: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem in the user's input (config, data, paths, reward source)."""


class ConfigError(UserError, ValueError):
    """Unknown or badly typed config key."""


class DataError(UserError, ValueError):
    """A dataset file or row that cannot be used; the message names file, line and field."""


class RewardError(UserError, RuntimeError):
    """A reward source raised or returned a non-finite score; the message names source and row."""


class RemoteError(Exception):
    """An exception raised in a sandboxed worker; the message is already its ``Type: text``."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, collapsed to one line and cut to ``limit`` chars."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, RemoteError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
