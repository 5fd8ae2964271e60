"""Pure tensor kernels of the molecular twin (no Mesa, no config objects).

The LJ step (:func:`lj_step`, :func:`baoab_step`) takes and returns the typed records of :mod:`.state`
(:class:`~.state.LJState`, :class:`~.state.VerletList`, :class:`~.state.NoiseKeys`, :class:`~.state.LJSettings`);
the other kernels are plain functions of tensors.

Layout: a fixed-capacity particle table per world, tensors shaped ``[W, N, ...]``
(W worlds, N slots); a boolean ``alive`` mask ``[W, N]`` says which slots hold a
particle. Neighbour lists hold *flattened* indices ``w * N + slot`` (``-1``: none),
so one gather serves every world. Every function works on CPU and CUDA, in
float32 or float64, and has no Python loop over particles or worlds.

Randomness never originates here: kernels take noise tensors (standard
normals, uniforms) as arguments; the model draws them from
:mod:`twins.core.noise`, keyed by particle id and step.

Units are whatever the caller uses consistently (the molecular scenario: nm,
µs, energies in kT; ``lj_fluid``: reduced Lennard-Jones units).

Length: the pure functions of both molecular steps (Brownian dynamics + Doi reactions, and the LJ step
with its neighbour lists), which share the periodic cell-list code.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import torch

from twins.core import noise
from twins.core.errors import check

from .state import LJSettings, LJState, NoiseKeys, VerletList

_OFFSETS = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]


# ----------------------------------------------------------------------------- space
def wrap(pos: torch.Tensor, box: float) -> torch.Tensor:
    """Fold positions into the periodic box ``[0, box)^3``."""
    return torch.remainder(pos, box)


def min_image(d: torch.Tensor, box: float) -> torch.Tensor:
    """Minimum-image displacement in a cubic periodic box."""
    return d - box * torch.round(d / box)


# ----------------------------------------------------------------------------- keyed noise, fast path
# The counter-based noise of :mod:`twins.core.noise` hashes the key chain
# (seed, stream) → replication → entity → step → draw, one splitmix round per
# link. Within a run the first links never change, so the model hashes them
# once (:func:`key_prefix`) and each step only pays the last one or two rounds
# (:func:`advance`): the bits are identical to ``noise.hash_keys``.
_MASK64 = (1 << 64) - 1
_GOLDEN_U = 0x9E3779B97F4A7C15
_LINK = 0x632BE59BD9B4E019


def _link(part: int) -> int:
    x = (int(part) * _GOLDEN_U + _LINK) & _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def key_prefix(seed, replication, stream, entity, device=None) -> torch.Tensor:
    """``noise.hash_keys`` state after the (seed, stream), replication and entity links."""
    device = device or (entity.device if isinstance(entity, torch.Tensor) else torch.device("cpu"))
    h = noise.mix64(noise._as_i64(seed, device) * noise._GOLDEN + noise._as_i64(int(stream), device))
    for part in (replication, entity):
        h = noise.mix64(h ^ (noise._as_i64(part, device) * noise._GOLDEN + _LINK))
    return h


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """``noise.mix64`` in place (same bits; half the memory traffic of the out-of-place ops)."""
    t = x >> 30
    t &= (1 << 34) - 1  # logical shift: clear the sign-extended bits
    x ^= t
    x *= noise._M1
    torch.bitwise_right_shift(x, 27, out=t)
    t &= (1 << 37) - 1
    x ^= t
    x *= noise._M2
    torch.bitwise_right_shift(x, 31, out=t)
    t &= (1 << 33) - 1
    return x.bitwise_xor_(t)


def advance(h: torch.Tensor, part) -> torch.Tensor:
    """One more link of the key chain (a step or a draw index; int or int64 tensor)."""
    if isinstance(part, torch.Tensor):
        return _mix64_(h ^ (part * noise._GOLDEN + _LINK))
    return _mix64_(h ^ _link(part))


def bits_uniform(h: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """``noise.uniform`` of hashed bits (top 53 bits; bit-identical to it)."""
    return ((noise.lsr(h, 11).to(torch.float64) + 0.5) * (1.0 / (1 << 53))).to(dtype)


def keyed_normals3(prefix: torch.Tensor, step: int, dtype=torch.float32) -> torch.Tensor:
    """Three standard normals per key ``prefix[...]`` (entity-level prefix) at ``step``:
    ``[..., 3]``. Two hashes per particle (draws 0 and 1 after the step link); each
    gives two 24-bit uniforms for one Box–Muller pair (the second pair's sine unused).
    Depends only on the key, so it is batch- and policy-independent like ``noise.normal``."""
    h = advance(prefix, step)
    hh = advance(h[..., None], torch.tensor([0, 1], device=h.device))  # draws 0 and 1: [..., 2]
    scale = 1.0 / (1 << 24)
    u1 = (noise.lsr(hh, 40).to(dtype) + 0.5) * scale
    u2 = (((hh >> 8) & 0xFFFFFF).to(dtype) + 0.5) * scale
    r = torch.sqrt(-2.0 * torch.log(u1))
    th = (2.0 * math.pi) * u2
    out = torch.empty((*h.shape, 3), dtype=dtype, device=h.device)
    torch.mul(r, torch.cos(th), out=out[..., :2])
    torch.mul(r[..., 0], torch.sin(th[..., 0]), out=out[..., 2])
    return out


# ----------------------------------------------------------------------------- neighbours
def check_geometry(box: float, cutoff: float, cell_size: float | None = None) -> float:
    """Validate box / cutoff / cell size; return the cell size used.

    The minimum-image convention needs ``box >= 2 * cutoff``; a cell list
    needs cells at least as large as the interaction (or reaction) range.
    """
    check(cutoff > 0, "cutoff", cutoff, "a positive interaction / reaction range")
    check(box >= 2 * cutoff, "box", box,
          f"a box edge of at least 2 x cutoff = {2 * cutoff:g} (minimum-image convention)",
          "Enlarge the box or shorten the cutoff / reaction radius.")
    cs = cutoff if cell_size is None else float(cell_size)
    check(cs >= cutoff, "cell_size", cs,
          f"a cell size >= the largest interaction or reaction radius ({cutoff:g})",
          "A reaction radius larger than the cell size would miss partners in non-adjacent cells.")
    return cs


def neighbor_candidates(pos: torch.Tensor, alive: torch.Tensor, box: float, cutoff: float,
                        cell_size: float | None = None) -> torch.Tensor:
    """Candidate neighbours of every particle, batched over worlds.

    Returns ``nbr[W, N, K]`` of flattened indices ``w*N + j`` of every live
    particle in the 27 cells around particle ``i`` (``-1`` padding, self
    excluded, dead rows all ``-1``). Every pair closer than ``cutoff`` is
    among the candidates. When the box holds fewer than 3 cells per edge the
    list is all-pairs (dense), which is then cheaper anyway.
    """
    W, N, _ = pos.shape
    dev = pos.device
    cs = check_geometry(box, cutoff, cell_size)
    nc = int(math.floor(box / cs + 1e-9))
    # cells larger than the range stay correct: cap the grid near 4 cells per particle
    nc = min(nc, max(3, int(math.ceil((4 * N) ** (1.0 / 3.0)))))
    base = (torch.arange(W, device=dev) * N)[:, None]
    me = base + torch.arange(N, device=dev)[None, :]  # [W, N]
    if nc < 3:
        j = me[:, None, :].expand(W, N, N)
        ok = alive[:, None, :] & alive[:, :, None] & (j != me[:, :, None])
        return torch.where(ok, j, torch.full_like(j, -1))
    ncell = nc ** 3
    cell = torch.floor(pos * (nc / box)).long().clamp_(0, nc - 1)  # [W,N,3]
    cid = (cell[..., 0] * nc + cell[..., 1]) * nc + cell[..., 2]
    sentinel = W * ncell
    key = torch.where(alive, cid + (torch.arange(W, device=dev) * ncell)[:, None],
                      torch.full_like(cid, sentinel)).reshape(-1)
    order = torch.argsort(key, stable=True)
    skey = key[order]
    counts = torch.bincount(skey, minlength=sentinel + 1)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(W * N, device=dev) - start[skey]
    M = int(counts[:-1].max().item()) if sentinel > 0 else 0
    M = max(M, 1)
    table = torch.full((sentinel + 1, M), -1, dtype=torch.long, device=dev)
    valid = skey < sentinel
    table[skey[valid], rank[valid]] = order[valid]
    off = torch.tensor(_OFFSETS, dtype=torch.long, device=dev)  # [27,3]
    nb = torch.remainder(cell[:, :, None, :] + off, nc)  # [W,N,27,3]
    ncid = (nb[..., 0] * nc + nb[..., 1]) * nc + nb[..., 2] + (torch.arange(W, device=dev) * ncell)[:, None, None]
    ncid = torch.where(alive[:, :, None], ncid, torch.full_like(ncid, sentinel))
    cand = table[ncid].reshape(W, N, 27 * M)
    return torch.where(cand == me[:, :, None], torch.full_like(cand, -1), cand)


def verlet_capacity(density: float, reach: float) -> int:
    """Neighbour-list slots per particle in a fluid of number ``density``: the mean count within
    ``reach`` (4/3 π reach³ ρ) with 30 % + 16 slots of headroom for local density fluctuations,
    rounded up to a multiple of 16. It follows from the scenario alone, so a world's list has the
    same width whatever batch it runs in (the width changes how a row's sum is rounded)."""
    mean = 4.0 / 3.0 * math.pi * reach ** 3 * density
    return int(math.ceil((1.3 * mean + 16.0) / 16.0)) * 16


def verlet_list(pos: torch.Tensor, alive: torch.Tensor, box: float, reach: float, capacity: int):
    """Verlet neighbour list (Allen & Tildesley 2017, §5.3.1): every live ``j != i`` closer than
    ``reach`` (cutoff + skin) to live ``i``, as flattened indices ``w*N + j`` in the cell list's
    order (which does not depend on the batch), ``-1`` after them.

    Returns ``(nbr [W, N, max(capacity, needed)], needed)`` where ``needed`` is the longest row
    (one host read, at a rebuild only). Built from :func:`cell_pairs` (``fine``: cells of half the reach).
    """
    W, N, _ = pos.shape
    gi, gj, _, _ = cell_pairs(pos, alive, alive, box, reach, fine=True)
    count = torch.bincount(gi, minlength=W * N)
    needed = int(count.max().item()) if count.numel() else 0
    width = max(capacity, needed)
    slot = torch.arange(gi.numel(), device=pos.device) - (torch.cumsum(count, 0) - count).index_select(0, gi)
    out = torch.full((W * N, width), -1, dtype=torch.long, device=pos.device)
    out[gi, slot] = gj
    return out.view(W, N, width), needed


def max_displacement(pos: torch.Tensor, ref: torch.Tensor, box: float) -> torch.Tensor:
    """Largest minimum-image distance of any particle from its position in ``ref``, per world ``[W]``."""
    d = min_image(pos - ref, box)
    return (d * d).sum(-1).amax(1).sqrt()


def cell_pairs(pos: torch.Tensor, query_mask: torch.Tensor, ref_mask: torch.Tensor, box: float,
               cutoff: float, cell_size: float | None = None, fine: bool = False):
    """Compact list of all pairs closer than ``cutoff``, via a cell list.

    Pairs ``(gi, gj)`` of flattened indices ``w*N + slot`` with
    ``query_mask[gi]``, ``ref_mask[gj]``, ``gi != gj``, same world and
    ``|r_ij| < cutoff``; also ``d = r_j - r_i`` (minimum image) and ``r2``.
    Only reference particles are binned, so the work is proportional to the
    number of close candidates (no padding): the sparse-system path (ligands
    meeting receptors). When the box holds at least 2 cells of edge
    ``>= 2 cutoff``, each query visits only the 2×2×2 block of cells on its own
    side of its cell's mid-planes (8 cells instead of 27: every partner within
    ``cutoff`` lies there); otherwise the 27 cells around it. Each unordered
    pair appears once per direction in which both masks allow it. ``fine=True`` (dense systems):
    cells of edge ``>= cutoff / 2`` and the 5³ around each query less those wholly out of range
    (0.75 × the candidates of 27 cells of edge ``cutoff`` in the LJ liquid bench state, measured).
    The pairs come grouped by query, in increasing ``gi``.
    """
    W, N, _ = pos.shape
    dev = pos.device
    cs = check_geometry(box, cutoff, cell_size)
    n_ref = max(int(ref_mask.sum().item()) // max(W, 1), 1)
    cap = max(2, int(math.ceil((2 * n_ref) ** (1.0 / 3.0))))  # ~2 reference particles per cell or fewer
    nc_half = min(int(math.floor(box / max(cs, 2.0 * cutoff) + 1e-9)), cap) if not fine else 0
    nc = nc_half if nc_half >= 2 else min(int(math.floor(box / cs + 1e-9)), max(3, cap))
    offsets = _OFFSETS
    if fine and int(math.floor(2.0 * box / cs + 1e-9)) >= 5:
        # cells of half the range: the 5³ cells around a query, less those wholly out of range (fewer candidates)
        nc = int(math.floor(2.0 * box / cs + 1e-9))
        h = box / nc
        offsets = [o for o in ((i, j, k) for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3))
                   if sum((max(abs(x) - 1, 0) * h) ** 2 for x in o) < cutoff * cutoff]
    flat = pos.reshape(W * N, 3)
    # gathers by index_select: several times faster on CPU than advanced indexing ``x[idx]``
    take = torch.Tensor.index_select
    if nc < 3 and nc_half < 2:  # all pairs of the world
        qi = torch.nonzero(query_mask.reshape(-1)).flatten()
        rj = torch.nonzero(ref_mask.reshape(-1)).flatten()
        same = (qi[:, None] // N) == (rj[None, :] // N)
        a, b = torch.nonzero(same & (qi[:, None] != rj[None, :]), as_tuple=True)
        gi, gj = take(qi, 0, a), take(rj, 0, b)
    else:
        ncell = nc ** 3
        scale = nc / box
        rflat = torch.nonzero(ref_mask.reshape(-1)).flatten()
        rc = torch.floor(take(flat, 0, rflat) * scale).long().clamp_(0, nc - 1)
        rkey = (rc[:, 0] * nc + rc[:, 1]) * nc + rc[:, 2] + torch.div(rflat, N, rounding_mode="floor") * ncell
        rkey, o = torch.sort(rkey, stable=True)
        rorder = take(rflat, 0, o)
        counts = torch.bincount(rkey, minlength=W * ncell)
        start = torch.cumsum(counts, 0) - counts
        qflat = torch.nonzero(query_mask.reshape(-1)).flatten()
        f = take(flat, 0, qflat) * scale
        qcell = torch.floor(f).long().clamp_(0, nc - 1)
        qbase = torch.div(qflat, N, rounding_mode="floor") * ncell
        if nc_half >= 2:
            # per axis: own cell and the neighbour on the near side (periodic), [Q,3,2]
            other = torch.where(f - qcell >= 0.5, qcell + 1, qcell - 1)
            other = torch.remainder(other, nc)
            ax = torch.stack((qcell, other), -1)
            ax[:, 0] *= nc * nc
            ax[:, 1] *= nc
            ax[:, 0] += qbase[:, None]
            xy = (ax[:, 0, :, None] + ax[:, 1, None, :]).reshape(-1, 4, 1)  # two broadcasts: cheaper than one
            nkey = (xy + ax[:, 2, None, :]).reshape(-1)
            ncand = 8
        else:
            off = torch.tensor(offsets, dtype=torch.long, device=dev)
            nb = torch.remainder(qcell[:, None, :] + off, nc)
            nkey = ((nb[..., 0] * nc + nb[..., 1]) * nc + nb[..., 2] + qbase[:, None]).reshape(-1)  # [Q*cells]
            ncand = len(offsets)
        cnt = take(counts, 0, nkey)
        # most looked-up cells are empty at these densities: keep the occupied ones (order preserved)
        look = torch.nonzero(cnt).flatten()
        cnt = take(cnt, 0, look)
        total = int(cnt.sum().item())
        rows = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt, output_size=total)
        excl = torch.cumsum(cnt, 0) - cnt
        first = take(start, 0, take(nkey, 0, look)) - excl
        gj = take(rorder, 0, take(first, 0, rows) + torch.arange(total, device=dev))
        gi = take(qflat, 0, torch.div(take(look, 0, rows), ncand, rounding_mode="floor"))
        keep = gi != gj
        if not bool(keep.all()):
            gi, gj = gi[keep], gj[keep]
    d = min_image(take(flat, 0, gj) - take(flat, 0, gi), box)
    r2 = (d * d).sum(-1)
    m = r2 < cutoff * cutoff
    return gi[m], gj[m], d[m], r2[m]


class ReachTable(NamedTuple):
    """Immobile reference particles binned for :func:`reach_pairs` (built by :func:`reach_table`).

    The box of every world is cut into ``nc³`` cells; cell ``c`` of world ``w`` (key
    ``w * nc³ + c``) lists, in ``members[start[key] : start[key] + count[key]]``, the
    flattened indices of the reference particles within reach of *some* point of the
    cell. The last key (``W * nc³``) is an empty cell for queries to skip.
    """

    nc: int
    start: torch.Tensor
    count: torch.Tensor
    members: torch.Tensor


#: reach tables larger than this (entries, upper bound) are not built: the per-step cell list is used
REACH_TABLE_MAX_ENTRIES = 1 << 26


def _reach_grid(box: float, cutoff: float, W: int, nc: int | None = None):
    """Cells per box edge, cell edge, padded reach and cells per axis a reach interval can touch."""
    if nc is None:
        nc = int(math.floor(2.0 * box / cutoff + 1e-9))
        nc = max(1, min(nc, int(((1 << 22) / max(W, 1)) ** (1.0 / 3.0) + 1e-9)))
    # query cell keys are computed in the positions' float type: exact below 2^24 cells
    check(1 <= nc and nc ** 3 < (1 << 24), "nc", nc, "between 1 and 255 cells per box edge")
    h = box / nc
    reach = cutoff * (1.0 + 1e-4) + 1e-6 * box  # float32 positions and cell indices round by ~1e-7 box
    span = int(math.floor(2.0 * reach / h)) + 2  # cells per axis an interval of length 2 reach can touch
    return nc, h, reach, span


def reach_table_bound(n_ref: int, box: float, cutoff: float, W: int) -> int:
    """Upper bound of a :func:`reach_table`'s entries for ``n_ref`` reference particles in all worlds
    (each listed in at most span³ cells; in practice about 40 % of that)."""
    return n_ref * _reach_grid(box, cutoff, W)[3] ** 3


def reach_table(pos: torch.Tensor, ref_mask: torch.Tensor, box: float, cutoff: float,
                nc: int | None = None) -> ReachTable:
    """Bin the (immobile) reference particles ``ref_mask`` once for :func:`reach_pairs`.

    Each reference particle is listed in every cell whose box comes closer than
    ``cutoff`` (padded by float rounding) to it under periodic images, so a query
    particle needs one cell lookup to find every reference partner within ``cutoff``.
    ``nc`` (cells per box edge) defaults to cells of edge about ``cutoff / 2``
    (candidates per query about 2.5 × the partners within reach), capped near
    2^22 cells over all worlds (memory; random lookups in a larger table miss the cache).
    """
    W, N, _ = pos.shape
    dev = pos.device
    check_geometry(box, cutoff)
    nc, h, reach, span = _reach_grid(box, cutoff, W, nc)
    ncell = nc ** 3
    o = torch.arange(span, device=dev)
    ridx = torch.nonzero(ref_mask.reshape(-1)).flatten()
    keys, members = [], []
    chunk = max(1, (1 << 22) // span ** 3)
    for r in torch.split(ridx, chunk):
        x = pos.reshape(-1, 3).index_select(0, r).double()  # [R, 3]
        ca = torch.floor((x - reach) / h).long()[:, :, None] + o  # per axis: cells that may be in reach [R,3,S]
        gap = (ca * h - x[..., None]).clamp_min(0) + (x[..., None] - (ca + 1) * h).clamp_min(0)
        g2 = gap * gap
        ok = g2[:, 0, :, None, None] + g2[:, 1, None, :, None] + g2[:, 2, None, None, :] < reach * reach
        cc = torch.remainder(ca, nc)
        cid = (cc[:, 0, :, None, None] * nc + cc[:, 1, None, :, None]) * nc + cc[:, 2, None, None, :]
        cid = cid + (torch.div(r, N, rounding_mode="floor") * ncell)[:, None, None, None]
        keys.append(cid[ok])
        members.append(r[:, None, None, None].expand_as(cid)[ok])
    keys = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long, device=dev)
    members = torch.cat(members) if members else torch.zeros(0, dtype=torch.long, device=dev)
    # sort by cell; a small box can reach one cell through two periodic images: list it once
    comb = torch.unique(keys * (W * N) + members)
    keys = torch.div(comb, W * N, rounding_mode="floor")
    count = torch.bincount(keys, minlength=W * ncell + 1)
    start = torch.cumsum(count, 0) - count
    return ReachTable(nc, start, count, comb - keys * (W * N))


def reach_pairs(pos: torch.Tensor, query_mask: torch.Tensor, ref_mask: torch.Tensor, table: ReachTable,
                box: float, cutoff: float, query_from: int = 0):
    """Compact list of the pairs closer than ``cutoff`` between query particles and the
    immobile reference particles of ``table`` (:func:`reach_table`, built on these
    reference positions): the same pairs as ``cell_pairs(pos, query_mask, ref_mask, ...)``
    with ``ref_mask`` a subset of the table's particles, the query slots ``[query_from, N)``
    and ``query_mask`` false before them, in another order.

    One cell lookup per query particle (instead of 8 or 27 cells per query and a
    re-binning of the reference particles every step). Returns ``(gi, gj, d, r2)``
    like :func:`cell_pairs`: flattened query and reference indices, ``d = r_j - r_i``
    (minimum image) and ``r2``.
    """
    W, N, _ = pos.shape
    dev = pos.device
    nc = table.nc
    Q = N - query_from
    take = torch.Tensor.index_select
    # cell index in floating point (exact: < 2^24) on the [W, Q, 3] view; integers only per particle
    c = torch.floor(pos[:, query_from:] * (nc / box)).clamp_(0, nc - 1)
    key = ((c[..., 0] * nc + c[..., 1]) * nc + c[..., 2]).long()
    key += (torch.arange(W, device=dev) * nc ** 3)[:, None]
    key = torch.where(query_mask[:, query_from:], key, W * nc ** 3).reshape(-1)  # the empty cell
    cnt = take(table.count, 0, key)
    look = torch.nonzero(cnt).flatten()
    cnt = take(cnt, 0, look)
    total = int(cnt.sum().item())
    rows = torch.repeat_interleave(torch.arange(look.numel(), device=dev), cnt, output_size=total)
    first = take(table.start, 0, take(key, 0, look)) - (torch.cumsum(cnt, 0) - cnt)
    gj = take(table.members, 0, take(first, 0, rows) + torch.arange(total, device=dev))
    q = take(look, 0, rows)
    gi = q + torch.div(q, Q, rounding_mode="floor") * query_from + query_from  # w*Q + i -> w*N + query_from + i
    flat = pos.reshape(W * N, 3)
    d = min_image(take(flat, 0, gj) - take(flat, 0, gi), box)
    r2 = (d * d).sum(-1)
    m = torch.nonzero((r2 < cutoff * cutoff) & take(ref_mask.reshape(-1), 0, gj)).flatten()
    return take(gi, 0, m), take(gj, 0, m), take(d, 0, m), take(r2, 0, m)


def pair_vectors(pos: torch.Tensor, nbr: torch.Tensor, box: float):
    """``d = r_j - r_i`` (minimum image) ``[W,N,K,3]``, ``r2 [W,N,K]``, ``valid [W,N,K]``."""
    W, N, _ = pos.shape
    flat = pos.reshape(W * N, 3)
    valid = nbr >= 0
    d = flat[nbr.clamp_min(0)] - pos[:, :, None, :]
    d = min_image(d, box)
    r2 = (d * d).sum(-1)
    return d, r2, valid


def candidate_pairs(pos, nbr, box, row_mask, col_mask, radius):
    """Compact list of pairs ``(i, j)`` (flattened indices) with ``|r_ij| < radius``,
    ``row_mask[i]`` and ``col_mask[j]``; also their distances. Row-major order."""
    W, N, _ = pos.shape
    d, r2, valid = pair_vectors(pos, nbr, box)
    colm = col_mask.reshape(-1)[nbr.clamp_min(0)]
    m = valid & colm & row_mask[:, :, None] & (r2 < radius * radius)
    w, i, k = torch.nonzero(m, as_tuple=True)
    gi = w * N + i
    gj = nbr[w, i, k]
    return gi, gj, r2[w, i, k].sqrt()


def check_no_overlap(pos, alive, box, min_distance, field="initial positions"):
    """Raise a :class:`ConfigError` when two live particles are closer than ``min_distance``."""
    if min_distance <= 0:
        return
    W, N, _ = pos.shape
    nbr = neighbor_candidates(pos, alive, box, min_distance)
    gi, gj, r = candidate_pairs(pos, nbr, box, alive, alive, min_distance)
    if gi.numel():
        k = int(torch.argmin(r))
        a, b = int(gi[k]), int(gj[k])
        check(False, field, f"particles {a % N} and {b % N} of world {a // N} at distance {float(r[k]):.3g}",
              f"no two particles closer than {min_distance:g}",
              "Overlapping particles give infinite forces: use a lattice start, a lower density, "
              "or spread the particles out.")


# ----------------------------------------------------------------------------- forces
def lj_forces(pos, nbr, box, cutoff, epsilon=1.0, sigma=1.0, shift=False):
    """Lennard-Jones ``4ε[(σ/r)^12 - (σ/r)^6]`` truncated at ``cutoff``.

    Returns ``(force [W,N,3], energy [W], virial [W], pairs [W])`` where energy
    is the sum over pairs (shifted by ``-V(cutoff)`` per pair when ``shift``),
    ``virial = Σ_pairs r_ij · f_ij`` (for ``P = (2 KE + virial)/(3V)``) and
    ``pairs`` the number of pairs inside the cutoff.
    """
    d, r2, valid = pair_vectors(pos, nbr, box)
    m = valid & (r2 < cutoff * cutoff)
    r2s = torch.where(m, r2, torch.ones_like(r2))
    s6 = (sigma * sigma / r2s) ** 3
    s6 = torch.where(m, s6, torch.zeros_like(s6))
    e = 4.0 * epsilon * (s6 * s6 - s6)
    if shift:
        sc6 = (sigma / cutoff) ** 6
        e = e - torch.where(m, torch.full_like(e, 4.0 * epsilon * (sc6 * sc6 - sc6)), torch.zeros_like(e))
    rf = 24.0 * epsilon * (2.0 * s6 * s6 - s6)  # r * |F|, positive = repulsive
    force = -((rf / r2s)[..., None] * d).sum(2)
    return force, 0.5 * e.sum((1, 2)), 0.5 * rf.sum((1, 2)), 0.5 * m.sum((1, 2)).to(pos.dtype)


def soft_repulsion_forces(pos, nbr, box, radius, k, pair_mask=None):
    """Harmonic soft repulsion ``U = k/2 (radius - r)^2`` for ``r < radius``.

    ``pair_mask [W,N]`` (optional): only particles with it set interact.
    Returns ``(force [W,N,3], energy [W])``.
    """
    d, r2, valid = pair_vectors(pos, nbr, box)
    m = valid & (r2 < radius * radius)
    if pair_mask is not None:
        W, N = pair_mask.shape
        m = m & pair_mask[:, :, None] & pair_mask.reshape(-1)[nbr.clamp_min(0)]
    r = torch.sqrt(torch.where(m, r2, torch.ones_like(r2)))
    over = torch.where(m, radius - r, torch.zeros_like(r))
    k = torch.as_tensor(k, dtype=pos.dtype, device=pos.device)
    if k.dim() == 1:
        k = k[:, None, None]
    force = -((k * over / r)[..., None] * d).sum(2)
    return force, 0.25 * (k * over * over).sum((1, 2))


def soft_repulsion_pair_forces(pos, mask, box, radius, k, cell_size=None):
    """Soft repulsion among the particles with ``mask`` via :func:`cell_pairs`
    (sparse systems). Returns ``force [W,N,3]``; ``k`` scalar or ``[W]``."""
    W, N, _ = pos.shape
    gi, gj, d, r2 = cell_pairs(pos, mask, mask, box, radius, cell_size)
    r = torch.sqrt(r2).clamp_min(1e-12)
    k = torch.as_tensor(k, dtype=pos.dtype, device=pos.device)
    kk = k[gi // N] if k.dim() == 1 else k
    f = -(kk * (radius - r) / r)[:, None] * d  # force on i (each ordered pair once)
    out = torch.zeros(W * N, 3, dtype=pos.dtype, device=pos.device)
    out.index_add_(0, gi, f)
    return out.view(W, N, 3)


# ----------------------------------------------------------------------------- integrators
def brownian_step(pos, force, D, dt, xi, box, kT=1.0, mobile=None):
    """Overdamped Langevin (Euler–Maruyama): ``x += D/kT F dt + sqrt(2 D dt) ξ``.

    ``D`` broadcasts against ``[W,N]``; ``xi [W,N,3]`` standard normals;
    ``mobile [W,N]`` (optional) freezes the others.
    """
    D = torch.as_tensor(D, dtype=pos.dtype, device=pos.device)
    if D.dim() >= 1 and D.shape[-1] != 3:
        D = D[..., None]
    dx = torch.sqrt(2.0 * D * dt) * xi
    if force is not None:
        dx = dx + (D / kT) * dt * force
    if mobile is not None:
        dx = torch.where(mobile[..., None], dx, torch.zeros_like(dx))
    return wrap(pos + dx, box), dx


def baoab_step(state: LJState, force_fn, kT, xi, settings: LJSettings, mass=1.0):
    """One BAOAB Langevin step (Leimkuhler & Matthews 2013) of ``state``'s positions, velocities and forces;
    ``settings.gamma = 0`` is velocity Verlet (NVE). ``force_fn(pos) -> (force, *extras)``; ``kT`` a number or
    ``[W]``; ``xi [W, N, 3]`` standard normals. Returns ``(state with the new pos, vel, force; extras)``."""
    dt, pos, vel, force = settings.dt, state.pos, state.vel, state.force
    half = 0.5 * dt / mass
    vel = vel + half * force
    pos = pos + 0.5 * dt * vel
    gamma = torch.as_tensor(settings.gamma, dtype=pos.dtype, device=pos.device)
    kT = torch.as_tensor(kT, dtype=pos.dtype, device=pos.device)
    if kT.dim() == 1:
        kT = kT[:, None, None]
    c1 = torch.exp(-gamma * dt)
    vel = c1 * vel + torch.sqrt((1.0 - c1 * c1) * kT / mass) * xi
    pos = wrap(pos + 0.5 * dt * vel, settings.box)
    out = force_fn(pos)
    force = out[0]
    vel = vel + half * force
    return replace(state, pos=pos, vel=vel, force=force), out[1:]


def draw_links(n: int, device=None) -> torch.Tensor:
    """The key-chain links of draws ``0 .. n-1`` (int64 ``[n]``), for :func:`keyed_normals`."""
    return torch.tensor([_link(d) for d in range(n)], dtype=torch.int64, device=device)


def keyed_normals(prefix: torch.Tensor, step: torch.Tensor, links: torch.Tensor, dtype) -> torch.Tensor:
    """``noise.normal(seed, replication, stream, entity, step, draw)`` for draws ``0 .. n/2-1``, bit for bit:
    ``prefix [...]`` from :func:`key_prefix`, ``step`` a 0-d int64 tensor, ``links`` from ``draw_links(n)``.
    Integer and float ops on tensors only (no Python integer folded at trace time), so inductor can fuse it."""
    u = bits_uniform(_mix64_(advance(prefix, step)[..., None] ^ links))
    return (torch.sqrt(-2.0 * torch.log(u[..., 0::2])) * torch.cos(2.0 * math.pi * u[..., 1::2])).to(dtype)


def lj_step(state: LJState, neighbors: VerletList, kT: torch.Tensor, keys: NoiseKeys,
            settings: LJSettings) -> LJState:
    """One BAOAB step of the LJ fluid over the Verlet lists ``neighbors``, as a pure function of tensors (so that
    inductor can fuse all of it, the keyed Brownian noise included); ``kT [W]`` each world's temperature.

    The new state's ``drift`` is the old one raised to each world's largest displacement from
    ``neighbors.built_at`` at the step's new positions; ``epot``, ``virial`` and ``npairs`` are those of the new
    forces.
    """
    xi = keyed_normals(keys.prefix, keys.step, keys.links, state.pos.dtype)
    moved = []

    def force_fn(p):
        moved.append(max_displacement(p, neighbors.built_at, settings.box))
        return lj_forces(p, neighbors.nbr, settings.box, settings.cutoff, shift=settings.shift)

    new, (epot, virial, npairs) = baoab_step(state, force_fn, kT, xi, settings)
    return replace(new, epot=epot, virial=virial, npairs=npairs, drift=torch.maximum(state.drift, moved[0]))


# ----------------------------------------------------------------------------- reactions
def bernoulli(rate, dt, u):
    """Event fires when ``u < 1 - exp(-rate dt)`` (``rate`` broadcasts against ``u``)."""
    return u < -torch.expm1(-torch.as_tensor(rate, dtype=u.dtype, device=u.device) * dt)


def doi_select(gi, gj, rate, dt, u, n_flat):
    """Doi-model binding draws for candidate pairs within the reaction radius.

    Each pair ``(gi[k], gj[k])`` fires independently with probability
    ``1 - exp(-rate[k] dt)`` (``u[k]`` its uniform). A particle joins at most
    one reaction per step: each educt ``i`` keeps its firing pair of smallest
    ``u`` (the earliest exponential clock), then each partner ``j`` keeps the
    smallest ``u`` among those. Returns the accepted ``(gi, gj)``.
    """
    fire = bernoulli(rate, dt, u)
    gi, gj, u = gi[fire], gj[fire], u[fire]
    if gi.numel() == 0:
        return gi, gj
    big = torch.full((n_flat,), 2.0, dtype=u.dtype, device=u.device)
    best_i = big.scatter_reduce(0, gi, u, reduce="amin")
    keep = u == best_i[gi]
    gi, gj, u = gi[keep], gj[keep], u[keep]
    best_j = big.scatter_reduce(0, gj, u, reduce="amin")
    keep = u == best_j[gj]
    return gi[keep], gj[keep]


def ball_point(u: torch.Tensor, radius) -> torch.Tensor:
    """Uniform point in a ball of ``radius`` from three uniforms ``u[..., 3]``."""
    r = torch.as_tensor(radius, dtype=u.dtype, device=u.device) * u[..., 0].pow(1.0 / 3.0)
    cos_t = 2.0 * u[..., 1] - 1.0
    sin_t = torch.sqrt(torch.clamp(1.0 - cos_t * cos_t, min=0.0))
    phi = 2.0 * math.pi * u[..., 2]
    return torch.stack((r * sin_t * torch.cos(phi), r * sin_t * torch.sin(phi), r * cos_t), -1)


# ----------------------------------------------------------------------------- theory
def smoluchowski_rate(D: float, R: float) -> float:
    """Diffusion-limited bimolecular rate ``4πDR`` (D = D_A + D_B)."""
    return 4.0 * math.pi * D * R


def doi_rate(lam, R, D):
    """Macroscopic rate of the Doi model, ``4πDR[1 - sqrt(D/(λR²)) tanh(R sqrt(λ/D))]``
    (Erban & Chapman 2009, Phys. Biol. 6, 046001); ``λV_R`` for λ→0,
    Smoluchowski ``4πDR`` for λ→∞. ``D = D_A + D_B``. Accepts floats or tensors."""
    if isinstance(lam, torch.Tensor):
        k = torch.sqrt(lam / D)
        return 4 * math.pi * D * R * (1.0 - torch.tanh(R * k) / (R * k))
    k = math.sqrt(lam / D)
    return 4 * math.pi * D * R * (1.0 - math.tanh(R * k) / (R * k))


def doi_dissociation_constant(k_on, k_off, R, dt):
    """Equilibrium ``K_d = [A][B]/[C]`` of reversible Doi binding with unbinding
    products placed uniformly in the reaction ball: detailed balance gives
    ``K_d = p_off / (p_on V_R)`` with the per-step probabilities
    ``p = 1 - exp(-rate dt)`` (``k_off / (λ V_R)`` as dt → 0), independent of D.
    """
    vr = 4.0 / 3.0 * math.pi * R ** 3
    if isinstance(k_on, torch.Tensor) or isinstance(k_off, torch.Tensor):
        k_on, k_off = torch.as_tensor(k_on), torch.as_tensor(k_off)
        return -torch.expm1(-k_off * dt) / (-torch.expm1(-k_on * dt) * vr)
    return -math.expm1(-k_off * dt) / (-math.expm1(-k_on * dt) * vr)


def lj_tail_corrections(rho, cutoff, epsilon=1.0, sigma=1.0):
    """Long-range corrections of a truncated LJ fluid (Allen & Tildesley, eqs. 2.144):
    ``(U_tail/N, P_tail)``."""
    sr3 = (sigma / cutoff) ** 3
    sr9 = sr3 ** 3
    u = 8.0 / 3.0 * math.pi * rho * epsilon * sigma ** 3 * (sr9 / 3.0 - sr3)
    p = 16.0 / 3.0 * math.pi * rho ** 2 * epsilon * sigma ** 3 * (2.0 / 3.0 * sr9 - sr3)
    return u, p
