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


# Optional modules -> the extra that installs them.
EXTRAS = {"matplotlib": "plot", "tensorboard": "tensorboard", "peft": "peft", "trl": "bench",
          "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
OOM_HINT = ("lower micro_batch_size, max_new_tokens, k or batch_size (prompts_per_step for "
            "train), or use a smaller model")
DISK_FULL = ("No space left on device", "Disk quota exceeded", "file write failed")
ENVIRONMENT_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "EMFILE", "ENFILE"}


def describe_failure(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) for an expected failure that is not a ``UserError``: out of memory,
    disk full, permissions, broken pipe, a missing optional module, an unsafe pickle; None for
    anything else (a bug)."""
    import errno
    import pickle

    text, name = " ".join(str(exc).split()), type(exc).__name__
    if isinstance(exc, BrokenPipeError):
        return 141, "output closed early (broken pipe)"
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                               or "out of memory" in text.lower())):
        return 1, f"out of memory ({one_line(exc, 160)}): {OOM_HINT}"
    if any(marker in text for marker in DISK_FULL) or (
            isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        where = f" writing '{exc.filename}'" if getattr(exc, "filename", None) else ""
        return 1, f"disk full{where} ({one_line(exc, 160)}); free space and rerun (--resume " \
                  "continues a run from its last intact checkpoint)"
    if isinstance(exc, OSError) and errno.errorcode.get(exc.errno or 0) in ENVIRONMENT_ERRNOS:
        where = f" '{exc.filename}'" if exc.filename else ""
        return 1, f"{exc.strerror or one_line(exc)}:{where} ({errno.errorcode[exc.errno]})"
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
        module = exc.name.split(".")[0]
        return 2, (f"{module} is not installed: pip install 'scorealign[{EXTRAS[module]}]'")
    if isinstance(exc, pickle.UnpicklingError):
        return 2, (f"refusing to load a pickled file ({one_line(exc, 160)}): scorealign reads "
                   "tensors only (safetensors, or torch.save of tensors)")
    return None
