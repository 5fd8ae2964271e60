"""Signal control as Mesa agents: each step, the twin's signal controls set the codes every link shows.

A :class:`SignalControl` is a ``mesa.Agent`` whose ``step()`` writes the signal codes of the step that follows
into ``model.signal_state`` (``[W, links]`` int64, the codes of :mod:`.kernels`: ``SIG_GREEN``,
``SIG_GREEN_MINOR``, ``SIG_YELLOW``, ``SIG_RED``; links as in ``model.net.link_program`` /
``model.net_cpu``). The twin steps its controls in order with ``model.signal_controls.do("step")`` before the
vehicles move, as one agent per control for all worlds and junctions at once (the columnar agent set of
mesa-frames, not one Python object per junction): the first is always :class:`ProgramControl`, the scenario's
programs; a control named by ``scenario.signal_control`` follows it, starts from the codes the programs
show (``model.signal_state``) and may replace any of them.

``scenario.signal_control``: ``programs`` (default: nothing after :class:`ProgramControl`) or
``module:ClassName`` (also ``module.ClassName``) naming a subclass importable from the working directory or
an installed package, e.g. ``python -m twins run scenario=junction scenario.signal_control=my_control:AllRed``.
A subclass implements :meth:`SignalControl.codes`; the README shows one. Keep the causal contract: codes that
depend only on the state and ``t`` (and on keyed noise, :mod:`twins.core.noise`) keep arms paired and worlds
independent of their batch.
"""
from __future__ import annotations

import importlib
import math
from typing import NamedTuple

import mesa
import numpy as np
import torch

from twins.core.errors import ConfigError

from . import control, kernels

PROGRAMS = "programs"
PHASE_END_MARGIN_S = 1e-6  # s: fixed-time codes are computed afresh this close to a phase's start or end


class _Held(NamedTuple):
    """Fixed-time codes computed at ``start`` that hold until ``until``, for a plan (its tensors, kept, and their
    versions) and its host copy (durations, offsets)."""

    plan: tuple
    versions: tuple
    host: tuple
    start: float
    until: float
    codes: torch.Tensor | None


class SignalControl(mesa.Agent):
    """A signal control of a traffic twin (subclass it): :meth:`codes` gives the codes of every world and link
    for time ``t``; :meth:`step` writes them into ``model.signal_state``."""

    def codes(self, t: float) -> torch.Tensor:
        """``[W, links]`` int64 signal codes for the step starting at ``t`` (s, the scenario's clock).
        ``self.model.signal_state`` holds what the controls before this one decided for this step."""
        raise NotImplementedError(f"{type(self).__name__}.codes(t): return [W, links] int64 signal codes")

    def step(self) -> None:
        m = self.model
        codes = self.codes(m.time_s)
        if m.step_index == 0:  # a user's control is checked once, on the first step (a check reads the device)
            _check_codes(type(self).__name__, codes, m.signal_state)
        m.signal_state = codes


class ProgramControl(SignalControl):
    """The scenario's signal programs: each world's fixed-time plan (``model.signal_durations`` and
    ``signal_offsets``, which an intervention may set per world), and max pressure (:mod:`.control`) at the
    programs and worlds where ``worlds.params["max_pressure"]`` enables it (the ``max_pressure`` intervention;
    the fixed-time plan elsewhere, bit for bit)."""

    def __init__(self, model):
        super().__init__(model)
        self.max_pressure_state = None  # control.max_pressure_codes' state: current phase and its start
        self._tables = None
        self._held: _Held | None = None  # fixed-time codes held until a phase ends

    def fixed_time(self, t: float) -> torch.Tensor:
        m = self.model
        d, o = m.signal_durations, m.signal_offsets
        # the codes are computed again only when a phase ends somewhere, known on the host from a copy of the plan
        # read once per plan (the plan's tensors are kept: an unchanged plan is the same objects at the same
        # versions): the same codes, a dozen tensor operations fewer a step, and no read of the device per step
        plan, versions, held = (d, o, m.net), (d._version, o._version), self._held
        if held is None or any(a is not b for a, b in zip(held.plan, plan)) or held.versions != versions:
            held = _Held(plan, versions, (d.cpu().numpy(), o.cpu().numpy()), -math.inf, -math.inf, None)
        if not held.start <= t < held.until:
            codes = kernels.signal_codes(t, d, o, m.net.phase_code, m.net.link_program, m.net.link_local)
            held = held._replace(start=t, until=t + _phase_left(t, *held.host), codes=codes)
        self._held = held
        return held.codes.clone()  # (a control after this one may write into the codes it is handed)

    def codes(self, t: float) -> torch.Tensor:
        m = self.model
        fixed = self.fixed_time(t)
        wp = m.worlds.params
        if "max_pressure" not in wp:
            return fixed
        enabled = wp["max_pressure"].to(m.device, torch.bool)
        if m.step_index == 0:  # a fresh run: the controller starts from the plan
            self._tables, self.max_pressure_state = control.program_tables(m.net), None
        if fixed.shape[1] == 0 or not bool(enabled.any()):
            return fixed
        codes, _, self.max_pressure_state = control.max_pressure_codes(
            self.max_pressure_state, t, m.lane_queues(), m.signal_durations, m.signal_offsets, m.net, self._tables,
            wp["max_pressure_min_green_s"], wp["max_pressure_max_green_s"], wp["max_pressure_interval_s"])
        return torch.where(enabled[:, m.net.link_program], codes, fixed)

    def step(self) -> None:  # the first control: nothing decided before it to check against
        self.model.signal_state = self.codes(self.model.time_s)


def control_class(spec: str | None) -> type[SignalControl] | None:
    """The control class ``scenario.signal_control`` names (None for ``programs``), or a ConfigError."""
    if spec is None or str(spec) == PROGRAMS:
        return None
    spec = str(spec)
    valid = f"{PROGRAMS}, or module:ClassName naming a twins.traffic.signals.SignalControl subclass"
    mod, sep, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not mod or not name:
        raise ConfigError("scenario.signal_control", spec, valid, "e.g. scenario.signal_control=my_control:AllRed")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except ImportError as e:
        raise ConfigError("scenario.signal_control", spec, valid,
                          f"module {mod!r} could not be imported ({e}); run from the folder that holds it, "
                          "or install it") from None
    except AttributeError:
        raise ConfigError("scenario.signal_control", spec, valid, f"module {mod!r} has no {name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, SignalControl)):
        raise ConfigError("scenario.signal_control", spec, valid, f"{spec} is not a SignalControl subclass")
    return cls


def _check_codes(name: str, codes, before: torch.Tensor) -> None:
    ok = (isinstance(codes, torch.Tensor) and tuple(codes.shape) == tuple(before.shape)
          and codes.dtype == before.dtype and codes.device == before.device)
    if ok and codes.numel():
        ok = bool(((codes >= kernels.SIG_GREEN) & (codes <= kernels.SIG_GREEN_MINOR)).all())
    if not ok:
        got = (f"{tuple(codes.shape)} {codes.dtype} on {codes.device}" if isinstance(codes, torch.Tensor)
               else type(codes).__name__)
        raise ConfigError("scenario.signal_control", name,
                          f"a control whose codes(t) returns a [W={before.shape[0]}, links={before.shape[1]}] "
                          f"{before.dtype} tensor on {before.device} of kernels.SIG_* codes (0-3)",
                          f"{name}.codes returned {got}")


def _phase_left(t: float, durations: np.ndarray, offsets: np.ndarray) -> float:
    """How long from ``t`` every program in every world stays in its current phase (s; ``durations`` [W, P, K]
    zero-padded, ``offsets`` [W, P], as :func:`kernels.signal_codes` reads them), less a margin; 0 where ``t`` lies
    within :data:`PHASE_END_MARGIN_S` of a phase's start or end: there the host's rounding and the device's could
    tell different phases, so the codes are not held."""
    if durations.size == 0:
        return math.inf
    ends = np.cumsum(durations, axis=2)
    tc = np.remainder(t - offsets, ends[:, :, -1])
    phase = np.minimum((ends <= tc[..., None]).sum(axis=2), durations.shape[2] - 1)
    end = np.take_along_axis(ends, phase[..., None], axis=2)[..., 0]
    start = end - np.take_along_axis(durations, phase[..., None], axis=2)[..., 0]
    left = float((end - tc).min())
    if left < 2 * PHASE_END_MARGIN_S or float((tc - start).min()) < PHASE_END_MARGIN_S:
        return 0.0
    return left - PHASE_END_MARGIN_S
