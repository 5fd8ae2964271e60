"""Counter-based exogenous noise.

Every random number in a twin is a pure function of
``(seed, replication, stream, entity, step, draw)``: a splitmix64-style hash
computed with torch integer ops. Nothing is drawn from a stateful generator,
so a world's numbers never depend on what other worlds (or other policies)
drew before it — the causal contract's noise alignment (DESIGN.md §3).

Streams name *what* the noise is for; use a fixed stream per purpose so that
adding a new use never shifts an old one.
"""
from __future__ import annotations

import math
from enum import IntEnum

import torch

_MASK64 = (1 << 64) - 1


def _s64(x: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_M1 = _s64(0xBF58476D1CE4E5B9)
_M2 = _s64(0x94D049BB133111EB)


class Stream(IntEnum):
    """Purposes of random numbers. Append only: never renumber."""

    DEMAND = 1  # departure times
    DRIVER = 2  # per-vehicle behaviour parameters
    ROUTE = 3  # route / lane choice
    PASSENGER = 4  # public-transport passenger arrivals
    CHOICE = 5  # discrete travel choices (e.g. whether a trip is made under a charge)
    DAWDLE = 6  # per-vehicle, per-step driver imperfection (Krauss sigma)
    BROWNIAN = 10  # molecular Brownian kicks
    REACTION = 11  # molecular reaction draws
    PLACEMENT = 12  # initial / dosing particle placement
    SUBGROUP = 13  # molecular subgroup assignment
    USER = 100  # free for scenario builders


def lsr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping arithmetic)."""
    x = x ^ lsr(x, 30)
    x = x * _M1
    x = x ^ lsr(x, 27)
    x = x * _M2
    return x ^ lsr(x, 31)


def _as_i64(v, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.to(device=device, dtype=torch.int64)
    return torch.tensor(v, dtype=torch.int64, device=device)


def hash_keys(seed, replication, stream, entity, step=0, draw=0, device=None) -> torch.Tensor:
    """Broadcast the key components and hash them into uniform int64 bits."""
    device = device or next(
        (t.device for t in (replication, entity, step, draw) if isinstance(t, torch.Tensor)),
        torch.device("cpu"),
    )
    # each mix in place on the fresh tensor the xor made (the same integers as mix64, fewer temporaries)
    h = _mix64_(_as_i64(seed, device) * _GOLDEN + _as_i64(int(stream), device))
    for part in (replication, entity, step, draw):
        h = _mix64_(h ^ (_as_i64(part, device) * _GOLDEN + 0x632BE59BD9B4E019))
    return h


def uniform(seed, replication, stream, entity, step=0, draw=0, dtype=torch.float64, device=None):
    """U(0,1), never exactly 0 or 1, from the top 53 bits of the hash."""
    bits = lsr(hash_keys(seed, replication, stream, entity, step, draw, device), 11)
    return ((bits.to(torch.float64) + 0.5) * (1.0 / (1 << 53))).to(dtype)


def normal(seed, replication, stream, entity, step=0, draw=0, dtype=torch.float64, device=None):
    """Standard normal by Box–Muller on draws ``2*draw`` and ``2*draw+1``."""
    draw = _as_i64(draw, device or torch.device("cpu")) if not isinstance(draw, int) else draw
    u1 = uniform(seed, replication, stream, entity, step, draw * 2, torch.float64, device)
    u2 = uniform(seed, replication, stream, entity, step, draw * 2 + 1, torch.float64, device)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype)


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` in place (``x`` must own its memory): the same integers, fewer temporaries."""
    x ^= lsr(x, 30)
    x *= _M1
    x ^= lsr(x, 27)
    x *= _M2
    x ^= lsr(x, 31)
    return x


def _absorb_(h: torch.Tensor, part) -> torch.Tensor:
    """One key component into ``h`` in place, as :func:`hash_keys` absorbs it (``part`` broadcasts to ``h``)."""
    h ^= _as_i64(part, h.device) * _GOLDEN + 0x632BE59BD9B4E019
    return _mix64_(h)


def uniform_draws(seed, replication, stream, entity, step=0, draws=(0,), device=None) -> list[torch.Tensor]:
    """``[uniform(seed, replication, stream, entity, step, d) for d in draws]`` (float64), bit for bit, with the
    key hashed once up to ``step`` and only the last component per draw: many draws of one large key
    (every vehicle of every world, say) at a fraction of the cost. The draws are elementwise, so a world's
    numbers never depend on the shape or position of the batch they are computed in."""
    device = device or next(
        (t.device for t in (replication, entity, step) if isinstance(t, torch.Tensor)), torch.device("cpu"))
    h = mix64(_as_i64(seed, device) * _GOLDEN + _as_i64(int(stream), device))
    h = mix64(h ^ (_as_i64(replication, device) * _GOLDEN + 0x632BE59BD9B4E019))
    h = mix64(h ^ (_as_i64(entity, device) * _GOLDEN + 0x632BE59BD9B4E019))  # a new tensor of the full shape
    h = _absorb_(h, step)
    out = []
    for d in draws:
        bits = _absorb_(h.clone(), d)
        bits = lsr(bits, 11).to(torch.float64)
        bits += 0.5
        bits *= 1.0 / (1 << 53)
        out.append(bits)
    return out


def normal_draws(seed, replication, stream, entity, step=0, draws=(0,), device=None) -> list[torch.Tensor]:
    """``[normal(seed, replication, stream, entity, step, d) for d in draws]`` (float64), bit for bit (the same
    Box–Muller on uniform draws ``2d`` and ``2d+1``), hashing the shared part of the key once."""
    u = uniform_draws(seed, replication, stream, entity, step, [x for d in draws for x in (2 * d, 2 * d + 1)], device)
    out = []
    for u1, u2 in zip(u[0::2], u[1::2]):
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
        out.append(z)
    return out


def exponential(seed, replication, stream, entity, step=0, draw=0, dtype=torch.float64, device=None):
    """Exp(1) by inversion."""
    u = uniform(seed, replication, stream, entity, step, draw, torch.float64, device)
    return (-torch.log(u)).to(dtype)
