"""One error type for bad user input: it names the field, the value, and what is valid."""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """Invalid configuration or input data, reported before compute is spent."""

    def __init__(self, field: str, value, valid: str, hint: str | None = None):
        self.field, self.value, self.valid = field, value, valid
        msg = f"{field}={value!r} is invalid: expected {valid}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


def suggest(name: str, options) -> str:
    """'Did you mean ...?' for a misspelled name, or the list of valid names."""
    options = sorted(str(o) for o in options)
    close = difflib.get_close_matches(str(name), options, n=3)
    if close:
        return f"Did you mean {' or '.join(repr(c) for c in close)}? Valid: {', '.join(options)}"
    return f"Valid: {', '.join(options)}"


def check(cond: bool, field: str, value, valid: str, hint: str | None = None) -> None:
    if not cond:
        raise ConfigError(field, value, valid, hint)
