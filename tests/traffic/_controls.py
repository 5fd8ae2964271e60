"""Signal controls for tests/traffic/test_signal_control.py (importable as tests.traffic._controls:NAME)."""
from __future__ import annotations

import torch

from twins.traffic.kernels import SIG_RED
from twins.traffic.signals import SignalControl


class Unchanged(SignalControl):
    """Shows what the programs show: a run with it must equal one without it, bit for bit."""

    def codes(self, t):
        return self.model.signal_state


class RedFirstTwoMinutes(SignalControl):
    """Every link red for the first 120 s of the run, then the programs."""

    def codes(self, t):
        shown = self.model.signal_state
        return torch.full_like(shown, SIG_RED) if t < self.model.begin + 120.0 else shown


class WrongShape(SignalControl):
    def codes(self, t):
        return self.model.signal_state[:, :1]


class NotAControl:
    pass
