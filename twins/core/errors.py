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


class NumericalError(RuntimeError):
    """A kernel produced a non-finite value: names the quantity, where and when, and what to check.

    Raised at the next observation point after it happened; the results recorded before stay valid
    (a run's partial tables are kept as after any crash)."""

    def __init__(self, quantity: str, world: int, entity: int, t: float, value, hint: str):
        self.quantity, self.world, self.entity, self.t, self.value = quantity, world, entity, t, value
        super().__init__(f"{quantity} of world {world}, entity {entity} is {value} (not finite) at t = {t:g} s; "
                         f"every state value must be a finite number. {hint}")
