"""The traffic step as one compiled loop per world, for the CPU (``compute.compile=true``).

:func:`twins.traffic.kernels.step` makes about 150 passes over memory per step, one per tensor
operation; on a CPU that, not arithmetic, is what a step costs. ``native_step.cpp`` applies the same
rules 2–6 in one loop per world, vehicle by vehicle, with the same operations in the same order and
precision: the numbers are bit-identical to the tensor kernels (``tests/traffic/test_native_step.py``).
Worlds are independent, so ranges of worlds run on several threads (ctypes releases the GIL).

The library is built on first use with the system C++ compiler (``$CXX``, else ``c++``; about two
seconds) into ``$TWINS_CACHE_DIR`` (else ``~/.cache/twins``), keyed by the source and flags.
Bus stops (rule 7) and CUDA stay on the tensor kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from twins.core.errors import ConfigError

from .state import Drivers, VehicleState

SOURCE = Path(__file__).with_name("native_step.cpp")
# -ffp-contract=off: no a*b+c fused into an FMA; no -ffast-math: every operation correctly rounded, as in
# the tensor kernels. -fno-trapping-math lets the compiler evaluate both sides of a select (it never
# changes a result); with SSE4.1's blends (x86-64-v2) or AVX2 (v3) it then vectorizes IDM.
BASE_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17", "-ffp-contract=off", "-fno-trapping-math"]
X86_64_V2 = ("cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2")  # /proc/cpuinfo names
X86_64_V3 = X86_64_V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")


def _cpu_flags() -> list[str]:
    """This CPU's feature flags from /proc/cpuinfo (none where unknown, or not x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])


def flag_sets() -> list[list[str]]:
    """Flags to build with, best first: the widest x86-64 level this CPU runs (a binary built for more dies of
    SIGILL, e.g. on QEMU's default model), then narrower ones for a compiler that lacks it. x86-64-v3 (AVX2, 2013
    on) doubles IDM's vector width; its FMA stays unused (-ffp-contract=off), so every level gives the same numbers."""
    flags = set(_cpu_flags())
    levels = [lv for lv, need in (("x86-64-v3", X86_64_V3), ("x86-64-v2", X86_64_V2)) if all(f in flags for f in need)]
    return [BASE_FLAGS + [f"-march={lv}"] for lv in levels] + [BASE_FLAGS]


_INTS = ("W", "S", "lo", "hi", "L", "M", "J", "G", "E", "max_lanes", "substeps", "insert_rounds", "delta_shared",
         "step_index", "need_sort", "has_conn", "has_turn", "cf", "has_foes", "C", "NF", "w0", "w1",
         "lane_change")
_REALS = ("t", "dt")
_PTRS = ("status", "lane", "route_pos", "insert_step", "arrive_step", "leader", "pos", "speed", "time_loss", "stops",
         "halted", "depart", "route", "delta", "length", "min_gap", "accel", "decel", "two_sqrt_ab", "tau",
         "speed_factor", "max_speed", "depart_speed", "lane_last", "lane_acc", "lane_length", "lane_speed", "conn_via",
         "edge_first_lane", "edge_n_lanes", "lane_conn_edge", "lane_conn", "conn_link", "route_edges", "route_mask",
         "route_len", "route_turn_speed", "sig", "resorted", "sigma", "dawdle", "conn", "conn_yield", "conn_zipper",
         "conn_foes", "lc_yield", "conn_to_mask", "route_best_mask", "lane_edge", "lane_index", "conn_wait", "conn_visibility",
         "conn_to_edge", "conn_keep_clear", "conn_zone", "conn_sib", "conn_div", "conn_div_foe", "conn_zone_at",
         "wait", "lc_stop", "route_ahead_m", "lc_keep_right", "lc_look_ahead_speed", "route_lane_cont")


class _Args(ctypes.Structure):  # the Args struct of native_step.cpp, field for field
    _fields_ = ([(k, ctypes.c_int64) for k in _INTS] + [(k, ctypes.c_double) for k in _REALS]
                + [(k, ctypes.c_void_p) for k in _PTRS])


# the network and route tables the step reads (their pointers are also part of _prepared's key); the boolean ones
# as bytes (a view: no copy)
_NET_TABLES = ("lane_length", "lane_speed", "conn_via", "edge_first_lane", "edge_n_lanes", "lane_conn_edge", "lane_conn",
               "conn_link", "conn_to_mask", "lane_edge", "lane_index", "conn_wait", "conn_visibility", "conn_to_edge",
               "conn_zone", "conn_sib", "conn_div", "conn_div_foe", "conn_zone_at", "conn_foes")
_NET_BYTES = ("conn_yield", "conn_zipper", "conn_keep_clear")
_ROUTE_TABLES = ("route_edges", "route_mask", "route_len", "route_turn_speed", "route_best_mask")
_LC_ROUTE_TABLES = ("route_ahead_m", "route_lane_cont")  # read only with lane changing

_lib = None
_warned = False
_prepared: tuple | None = None  # (key, [Args], the objects keyed) of the last call: its tensors, checked
_pool: ThreadPoolExecutor | None = None


def cache_dir() -> Path:
    root = os.environ.get("TWINS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "twins"
    return Path(root)


def _build(cxx: str, flags: list[str], lib: Path) -> str | None:
    """Compile into ``lib`` (atomically: parallel builds never clash); the compiler's errors on failure."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if proc.returncode:
            return proc.stderr[-2000:]
        os.replace(tmp, lib)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL:
    """The compiled step (built on first use). Raises :class:`ConfigError` naming ``compute.compile``
    when no C++ compiler is found, the build fails, or the cache folder cannot be written."""
    global _lib
    if _lib is not None:
        return _lib
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    src = SOURCE.read_bytes()
    errors = []
    try:
        for flags in flag_sets():
            key = hashlib.sha256(src + " ".join([str(cxx)] + flags).encode()).hexdigest()[:16]
            lib = cache_dir() / f"traffic_step_{key}.so"
            if lib.exists():
                break
            if not cxx:
                raise ConfigError("compute.compile", True, "false on this machine: the compiled CPU step needs a "
                                  "C++ compiler (install g++ or clang++, or set $CXX)")
            err = _build(cxx, flags, lib)
            if err is None:
                break
            errors.append(f"{cxx} {' '.join(flags)}:\n{err}")
        else:
            raise ConfigError("compute.compile", True, "false on this machine: building the compiled CPU step "
                              "failed:\n" + "\n".join(errors))
        dll = ctypes.CDLL(str(lib))
    except FileNotFoundError as e:
        if e.filename == cxx:
            raise ConfigError("compute.compile", True, f"false on this machine: no C++ compiler at {cxx}; "
                              "install g++ or clang++, or point $CXX at one") from None
        raise ConfigError("compute.compile", True, f"false on this machine: {e}; set $TWINS_CACHE_DIR to a "
                          "writable folder") from None
    except OSError as e:  # an unwritable cache folder, a library that does not load
        raise ConfigError("compute.compile", True, f"false on this machine: {e}; set $TWINS_CACHE_DIR to a "
                          "writable folder") from None
    if dll.twins_traffic_abi() != ctypes.sizeof(_Args):
        raise ConfigError("compute.compile", True, f"false, or delete {lib} to rebuild it: its argument layout "
                          "differs from twins/traffic/native.py")
    for name in ("twins_traffic_step_f32", "twins_traffic_step_f64"):
        getattr(dll, name).argtypes = [ctypes.POINTER(_Args)]
        getattr(dll, name).restype = ctypes.c_int
    _lib = dll
    return dll


def available(warn: bool = False) -> bool:
    """Whether the compiled step can be used (builds it if needed); ``warn``: say why not, once."""
    global _warned
    try:
        load()
        return True
    except ConfigError as e:
        if warn and not _warned:
            _warned = True
            warnings.warn(f"compute.compile=null: the traffic twin runs its tensor kernels (5-7x slower on a CPU) "
                          f"because the compiled step is unavailable: {e}", stacklevel=3)
        return False


def _ptr(x: torch.Tensor, name: str) -> int:
    if not x.is_contiguous() or x.device.type != "cpu":
        raise ValueError(f"native step: {name} must be a contiguous CPU tensor")
    return x.data_ptr()


def step_(state: VehicleState, drivers: Drivers, lane_last: torch.Tensor, lane_acc: torch.Tensor, net, routes, sig: torch.Tensor,
          t: float, step_index: int, dt: float, lo: int, hi: int, substeps: int, insert_rounds: int,
          delta: int | None, need_sort: bool, threads: int = 1, cf: int = 0,
          dawdle: torch.Tensor | None = None, lane_change: bool = False,
          wait: torch.Tensor | None = None) -> torch.Tensor:
    """Advance every world by ``dt`` **in place** (as ``kernels.step`` and the write-back in
    ``TrafficTwin.step`` together, bus stops excepted).

    ``state``/``drivers``: the twin's ``[W, S]`` columns (``leader`` holds slots within the world);
    ``lane_last`` ``[W, L]`` each lane's tail slot (-1: empty), updated; ``lane_acc`` ``[W*L, 3]``
    float64 per-lane sums (running vehicles, speed, time loss) this step's are added to; ``lo``/``hi``
    the window of slots that can be due, running or arriving; ``need_sort``: leaders and tails are
    not carried yet (the first step); ``cf`` the car-following model (``kernels.IDM``/``KRAUSS``) and ``dawdle``
    ``[W, hi - lo]`` the Krauss dawdling draws of the window's slots (None: no dawdling); ``lane_change`` rule 11
    (then ``state.lc_yield`` holds slots within the world, -1: none, and ``state.lc_stop`` where each vehicle stops next
    step, +inf: anywhere); ``wait`` ``[W, S]`` int32 the steps each vehicle has stood (rule 10's impatience; None:
    none), counted on in place after the move (+1 where running and halted, else 0 within the window). Returns
    ``[W]`` int64: 1 where a world's carried order failed its check and its lanes were sorted again.
    """
    W, S = state.pos.shape
    dtype = state.pos.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"native step: dtype {dtype}; valid: float32, float64")
    fn = getattr(load(), "twins_traffic_step_f32" if dtype == torch.float32 else "twins_traffic_step_f64")
    # the pointers and sizes are checked once for a set of tensor objects and kept while the same objects come
    # (they are kept alive with the arguments, so no other tensor can take an id; the step's own writes are in
    # place). A check per step cost as much as a step of a small network, the key of pointers a third of one.
    cols, veh = state.columns(), drivers.columns()
    tensors = (*cols.values(), *veh.values(), lane_last, lane_acc, wait,
               *(getattr(net, k) for k in _NET_TABLES + _NET_BYTES), *(getattr(routes, k) for k in _ROUTE_TABLES),
               *(getattr(routes, k) if lane_change else None for k in _LC_ROUTE_TABLES))
    key = (W, S, dtype, dt, tuple(sig.shape), lane_change, int(cf), substeps, insert_rounds, delta,
           min(max(1, threads), W), id(net), id(routes), tuple(map(id, tensors)))
    global _prepared
    if _prepared is None or _prepared[0] != key:
        _prepared = (key, _prepare(state, drivers, cols, veh, lane_last, lane_acc, net, routes, sig, W, S, dtype, dt,
                                   substeps, insert_rounds, delta, cf, lane_change, wait, threads),
                     (net, routes, tensors))
    args = _prepared[1]
    resorted = torch.zeros(W, dtype=torch.int64)
    if sig.dtype != torch.int8:  # (the signal codes are a new tensor every step)
        raise ValueError(f"native step: sig is {sig.dtype}; expected torch.int8")
    sig_ptr = _ptr(sig, "sig")
    dawdle_ptr = None
    if dawdle is not None:
        if dawdle.dtype != dtype or tuple(dawdle.shape) != (W, hi - lo):
            raise ValueError(f"native step: dawdle is {dawdle.dtype} {tuple(dawdle.shape)}; expected {dtype} "
                             f"({W}, {hi - lo})")
        dawdle_ptr = _ptr(dawdle, "dawdle")
    for arg in args:
        arg.t, arg.step_index, arg.lo, arg.hi, arg.need_sort = t, step_index, lo, hi, int(need_sort)
        arg.resorted, arg.dawdle, arg.sig = resorted.data_ptr(), dawdle_ptr, sig_ptr
    if len(args) == 1:
        fn(ctypes.byref(args[0]))
    else:
        global _pool
        if _pool is None or _pool._max_workers < len(args):
            _pool = ThreadPoolExecutor(max_workers=len(args), thread_name_prefix="twins-native")
        list(_pool.map(lambda a: fn(ctypes.byref(a)), args))
    return resorted


def _prepare(state, drivers, cols, veh, lane_last, lane_acc, net, routes, sig, W, S, dtype, dt, substeps,
             insert_rounds, delta, cf, lane_change, wait, threads) -> list:
    """The checked arguments of :func:`step_` as one Args per chunk of worlds, the per-step fields left to fill."""
    halted = state.halted.view(torch.uint8)
    ptrs = {k: _ptr(cols[k], k) for k in ("status", "lane", "route_pos", "insert_step", "arrive_step", "leader",
                                            "pos", "speed", "time_loss", "stops", "depart", "conn")}
    ptrs.update({k: _ptr(getattr(net, k), k) for k in _NET_TABLES})
    ptrs.update({k: _ptr(getattr(net, k).view(torch.uint8), k) for k in _NET_BYTES})
    ptrs.update({k: _ptr(getattr(routes, k), k) for k in _ROUTE_TABLES})
    ptrs["halted"] = _ptr(halted, "halted")
    ptrs.update({k: _ptr(veh[k], k) for k in ("route", "delta", "length", "min_gap", "accel", "decel",
                                              "two_sqrt_ab", "tau", "speed_factor", "max_speed", "sigma",
                                              "depart_speed")})
    ptrs["dawdle"] = None  # set per step
    ptrs["wait"] = None
    if wait is not None:
        if wait.dtype != torch.int32 or tuple(wait.shape) != (W, S):
            raise ValueError(f"native step: wait is {wait.dtype} {tuple(wait.shape)}; expected torch.int32 ({W}, {S})")
        ptrs["wait"] = _ptr(wait, "wait")
    ptrs.update(lane_last=_ptr(lane_last, "lane_last"), lane_acc=_ptr(lane_acc, "lane_acc"),
                sig=None, resorted=None)  # set per step
    ptrs["lc_yield"] = _ptr(state.lc_yield, "lc_yield") if lane_change else None
    ptrs["lc_stop"] = _ptr(state.lc_stop, "lc_stop") if lane_change else None
    ptrs["lc_keep_right"] = _ptr(state.lc_keep_right, "lc_keep_right") if lane_change else None
    ptrs["lc_look_ahead_speed"] = _ptr(state.lc_look_ahead_speed, "lc_look_ahead_speed") if lane_change else None
    ptrs.update({k: _ptr(getattr(routes, k), k) if lane_change else None for k in _LC_ROUTE_TABLES})
    i64 = torch.int64
    want = {**{k: i64 for k in ("status", "lane", "route_pos", "insert_step", "arrive_step", "leader", "conn")
               + (("lc_yield",) if lane_change else ())},
            **{k: dtype for k in ("speed", "time_loss")
               + (("lc_stop", "lc_keep_right", "lc_look_ahead_speed") if lane_change else ())},
            "stops": torch.int32, "depart": torch.float64,
            "halted": torch.bool}
    want_veh = {"route": i64, "delta": i64, **{k: dtype for k in ("length", "min_gap", "accel", "decel", "two_sqrt_ab",
                                                                  "tau", "speed_factor", "max_speed", "sigma",
                                                                  "depart_speed")}}
    for name, record, kinds in (("state", cols, want), ("drivers", veh, want_veh)):
        for k, d in kinds.items():
            if record[k].dtype != d or tuple(record[k].shape) != (W, S):
                raise ValueError(f"native step: {name}.{k} is {record[k].dtype} {tuple(record[k].shape)}; "
                                 f"expected {d} ({W}, {S})")
    L = net.n_lanes
    tables = [("lane_last", lane_last, i64, (W, L)), ("lane_acc", lane_acc, torch.float64, (W * L, 3)),
              ("sig", sig, torch.int8, (W, sig.shape[-1])),
              *((f"net.{k}", getattr(net, k), dtype, (L,)) for k in ("lane_length", "lane_speed")),
              *((f"net.{k}", getattr(net, k), dtype, tuple(net.conn_via.shape))
                for k in ("conn_via", "conn_wait", "conn_visibility")),
              *((f"net.{k}", getattr(net, k), d, (int(net.conn_via.numel()), net.lane_conn.shape[1]))
                for k, d in (("conn_sib", i64), ("conn_div", dtype), ("conn_div_foe", dtype))),
              ("net.conn_zone_at", net.conn_zone_at, dtype, tuple(net.conn_foes.shape)),
              *((f"net.{k}", getattr(net, k), i64, tuple(getattr(net, k).shape))
                for k in ("edge_first_lane", "edge_n_lanes", "lane_conn_edge", "lane_conn", "conn_link", "conn_foes",
                          "conn_zone", "conn_to_mask", "lane_edge", "lane_index", "conn_to_edge")),
              ("net.conn_yield", net.conn_yield, torch.bool, tuple(net.conn_link.shape)),
              ("net.conn_zipper", net.conn_zipper, torch.bool, tuple(net.conn_link.shape)),
              ("net.conn_keep_clear", net.conn_keep_clear, torch.bool, tuple(net.conn_link.shape)),
              *((f"routes.{k}", getattr(routes, k), i64, tuple(getattr(routes, k).shape))
                for k in ("route_edges", "route_mask", "route_len", "route_best_mask")),
              ("routes.route_turn_speed", routes.route_turn_speed, dtype, tuple(routes.route_edges.shape)),
              *((("routes.route_ahead_m", routes.route_ahead_m, dtype, tuple(routes.route_edges.shape)),
                 ("routes.route_lane_cont", routes.route_lane_cont, dtype,
                  (*routes.route_edges.shape, net.max_lanes))) if lane_change else ())]
    for name, x, d, shape in tables:  # the C++ reads raw memory: a wrong type or size would read garbage
        if x.dtype != d or tuple(x.shape) != shape:
            raise ValueError(f"native step: {name} is {x.dtype} {tuple(x.shape)}; expected {d} {shape}")
    ints = dict(W=W, S=S, lo=0, hi=0, L=L, M=routes.route_edges.shape[1], J=net.lane_conn.shape[1],
                G=sig.shape[1], E=len(net.edge_ids), max_lanes=net.max_lanes, substeps=substeps,
                insert_rounds=insert_rounds, delta_shared=-1 if delta is None else int(delta), step_index=0,
                need_sort=0, has_conn=int(net.conn_key.numel() > 0), has_turn=int(routes.has_turn_speeds),
                cf=int(cf), has_foes=int(net.has_foes), C=int(net.conn_link.numel()), NF=int(net.conn_foes.shape[1]),
                lane_change=int(lane_change))
    chunks = min(max(1, threads), W)
    bounds = [W * i // chunks for i in range(chunks + 1)]
    return [_Args(**ints, w0=bounds[i], w1=bounds[i + 1], t=0.0, dt=dt, **ptrs) for i in range(chunks)]


__all__ = ["available", "load", "step_", "cache_dir"]

if __name__ == "__main__":  # python -m twins.traffic.native: build and report where
    load()
    print(f"built {SOURCE.name} into {cache_dir()}", file=sys.stderr)
