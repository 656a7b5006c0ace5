"""Errors a user can cause. The CLI prints their message (no traceback) and exits with their code."""


class SliqError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""

    exit_code = 1


class UsageError(SliqError, ValueError):
    """Wrong arguments or options (exit code 2, like typer's own usage errors); from the Python API, the ValueError
    a bad argument is."""

    exit_code = 2


class HeadExistsError(UsageError):
    """A head of that name exists already for the encoder; fitting again needs force=True (`--force`)."""


class SliqWarning(UserWarning):
    """Results are computed but may mislead (in-sample numbers, a small sample); the CLI prints these as warnings."""


class InputError(SliqError):
    """Bad input data: names the file, and the line where there is one."""

    def __init__(self, path, reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class Interrupted(SliqError):
    """Stopped by Ctrl-C or SIGTERM (exit code 130, as a shell reports SIGINT)."""

    exit_code = 130

    def __init__(self, message: str, step: int, saved: int):
        self.step, self.saved = step, saved  # the last step trained, the step of the last saved state
        super().__init__(message)
