"""Typed errors. Each carries the exit code the CLI uses.

- UsageError (exit 2): bad input from the user: a missing file, a corrupt model,
  wrong shapes, NaN data, an unknown profile key, a missing optional dependency.
- GateFailed (exit 1): the work was done but a budget or gate was missed. The library does not raise it: it
  reports verdicts on its results (BuildResult.passed, NasResult.passed, ValidationResult.failures) and the
  CLI alone turns them into exit 1. It stays public for callers that want to raise a verdict as an error.
- StageError (exit 3): an internal stage failed; the message names the stage.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    exit_code = 3


class UsageError(EdgekitError):
    exit_code = 2


class GateFailed(EdgekitError):
    exit_code = 1


class StageError(EdgekitError):
    exit_code = 3

    def __init__(self, stage: str, message: str):
        self.stage, self.reason = stage, message
        super().__init__(f"stage '{stage}' failed: {message}")


class ValidationFailed(StageError):
    """An exported file disagrees with its reference; lists every failing output."""

    def __init__(self, file: str, failures: list[str]):
        self.failures = list(failures)
        super().__init__("validate", f"{file}: " + "; ".join(self.failures))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: type and first line of the message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:400]
