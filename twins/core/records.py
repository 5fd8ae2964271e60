"""What the twins' typed state records share (``twins/traffic/state.py``, ``twins/molecular/state.py``)."""
from __future__ import annotations

from dataclasses import fields, replace
from functools import cache
from typing import Callable

import torch

Tensor = torch.Tensor


class Columns:
    """Helpers shared by records that are dataclasses of tensors: the columns present, and one function applied
    to each."""

    def columns(self) -> dict[str, Tensor]:
        """``{name: tensor}`` of the fields that are set (optional ones may be None)."""
        return {name: value for name in _field_names(type(self)) if (value := getattr(self, name)) is not None}

    def map(self, fn: Callable[[Tensor], Tensor]):
        """A record of the same type with ``fn`` applied to every set column (e.g. a window, a device)."""
        return replace(self, **{k: fn(v) for k, v in self.columns().items()})


@cache
def _field_names(cls) -> tuple[str, ...]:
    """A record class's field names (``dataclasses.fields`` costs more than the rest of :meth:`Columns.columns`)."""
    return tuple(f.name for f in fields(cls))
