"""Run SUMO on a scenario with a given signal plan and return the twin's metric names.

SUMO (the ``eclipse-sumo`` binary, the ``[sumo]`` extra) is the outside check:
a plan found in the twin is written as a ``tlLogic`` additional file, loaded
after the scenario's own programs (so it is the one SUMO runs) and measured
with SUMO's tripinfo and statistics outputs.

Metric names (the twin's):

* ``mean_travel_time_s`` — mean tripinfo ``duration`` (arrival − actual
  departure) of the vehicles that arrived; ``mean_travel_time_with_depart_delay_s``
  adds the time spent waiting for insertion.
* ``mean_delay_s`` — mean tripinfo ``timeLoss`` (time lost against driving at
  the desired speed) of the arrived vehicles.
* ``throughput_veh`` — vehicles that arrived by ``end``.
* ``resco_delay_s`` — RESCO's delay: time loss plus departure delay over all loaded vehicles (those still
  running or still waiting to enter at ``end`` included; the waiting ones count SUMO's
  ``departDelayWaiting``).
* ``vehicles_loaded``, ``vehicles_inserted``, ``vehicles_running``,
  ``vehicles_waiting`` (still waiting for insertion at the end), ``teleports``.
* ``wall_time_s`` (the SUMO process, load included), ``sim_time_s`` (SUMO's own
  clock for the simulation loop), ``vehicle_steps`` (vehicle updates done:
  sum of all vehicles' time in the network / step length), ``updates_per_s``
  (= vehicle_steps / sim_time_s; SUMO's own figure is ``sumo_updates_per_s``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from twins.core.errors import ConfigError
from twins.traffic.demand import Demand
from twins.traffic.network import SignalProgram
from twins.traffic.sumo import SumoScenario, read_sumocfg, write_routes, write_tllogic
from twins.traffic.sumo_xml import parse

__all__ = ["SumoNotFoundError", "find_sumo", "run_sumo", "input_files", "read_elements", "PLAN_PROGRAM_ID"]

PLAN_PROGRAM_ID = "twins_plan"
INSTALL_HINT = 'Install the SUMO extra: pip install -e ".[sumo]" (or set SUMO_HOME to a SUMO installation).'


class SumoNotFoundError(RuntimeError):
    """The SUMO binaries are not installed."""


def find_sumo(tool: str = "sumo") -> str:
    """Path of a SUMO binary (``sumo``, ``netgenerate``, ``netconvert``, ...)."""
    exe = tool + (".exe" if os.name == "nt" else "")
    home = os.environ.get("SUMO_HOME")
    candidates = []
    if home:
        candidates.append(Path(home) / "bin" / exe)
    try:  # the eclipse-sumo wheel
        import sumo as _sumo_pkg  # type: ignore

        candidates.append(Path(_sumo_pkg.SUMO_HOME) / "bin" / exe)
    except Exception:  # noqa: BLE001
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    w = shutil.which(tool)
    if w:
        return w
    raise SumoNotFoundError(f"SUMO's {tool!r} binary was not found. {INSTALL_HINT}")


def input_files(scenario) -> tuple[Path | None, dict]:
    """(sumocfg or None, {net, routes, additional}) of what ``run_sumo`` was given (a ``.sumocfg``, a
    :class:`SumoScenario`, or ``{net, routes, additional}``): the files SUMO reads."""
    if isinstance(scenario, SumoScenario):
        scenario = scenario.files
    if isinstance(scenario, (str, Path)):
        p = Path(scenario)
        if p.suffix == ".sumocfg" or p.name.endswith(".sumocfg.xml"):
            opts, p = read_sumocfg(p)
            base = p.parent
            split = lambda v: [str(base / x) for x in v.replace(",", " ").split()]  # noqa: E731
            return p, {"net": split(opts.get("net-file", ""))[:1], "routes": split(opts.get("route-files", "")),
                       "additional": split(opts.get("additional-files", ""))}
        if not p.is_file():
            raise ConfigError("sumocfg", str(p), "an existing .sumocfg or .net.xml file")
        return None, {"net": [str(p)], "routes": [], "additional": []}
    if isinstance(scenario, dict):
        if scenario.get("sumocfg"):
            cfg, files = input_files(scenario["sumocfg"])
            return cfg, files
        norm = {}
        for k in ("net", "routes", "additional"):
            v = scenario.get(k) or []
            norm[k] = [str(x) for x in ([v] if isinstance(v, (str, Path)) else v)]
        if not norm["net"]:
            raise ConfigError("net", None, "a .net.xml file")
        return None, norm
    raise ConfigError("scenario", type(scenario).__name__, "a .sumocfg path, a SumoScenario or a dict of files")


def read_elements(path: Path, tags: set[str]) -> list[tuple[str, dict]]:
    """``(tag, attributes)`` of every element of a SUMO XML output (tripinfo, statistics, ...) whose tag is in
    ``tags``, in file order."""
    out = []

    def start(tag, a, where):
        if tag in tags:
            out.append((tag, a))

    parse(path, start)
    return out


def run_sumo(scenario, plan: dict[str, SignalProgram] | None = None, *, car_follow_model: str | None = "IDM",
             seed: int = 0, begin: float | None = None, end: float | None = None,
             routes: Demand | str | Path | list | None = None, step_length: float | None = None,
             time_to_teleport: float | None = None, extra_args=(), timeout: float | None = None,
             workdir: str | Path | None = None, binary: str | None = None, lane_data: bool = False,
             trip_data: bool = False) -> dict:
    """Run SUMO on ``scenario`` (a ``.sumocfg``, a :class:`SumoScenario`, or ``{net, routes, additional}``).

    ``plan``: signal programs to run instead of the scenario's (keyed by signal
    id; signals not in it keep theirs). ``car_follow_model``: SUMO's default
    car-following model (``None`` keeps SUMO's Krauss). ``routes``: replace the
    scenario's demand (a :class:`Demand` is written as a route file). ``end``:
    stop time (default: the scenario's). ``workdir``: keep SUMO's files there
    (default: a temporary folder, removed afterwards). ``lane_data``: also SUMO's per-lane totals over the run
    (a ``laneData`` output), returned under ``"lanes"``: ``{lane id: {"time_loss_s", "sampled_s"}}`` of the lanes
    of normal edges, each junction's internal lanes counted in the lane they lead to (as the twin counts a crossing).
    ``trip_data``: also every trip, under ``"trips"``: a list of ``{"id", "depart_s"`` (planned: actual departure less
    the departure delay), ``"origin"`` (the edge it departed on), ``"time_loss_s"``, ``"duration_s"``, ``"arrived"}``
    (vehicles still running at the end included, ``arrived`` False). Returns the metrics.
    """
    exe = binary or find_sumo("sumo")
    cfg, files = input_files(scenario)
    tmp = tempfile.TemporaryDirectory(prefix="twins_sumo_") if workdir is None else None
    wd = Path(tmp.name if tmp else workdir)
    wd.mkdir(parents=True, exist_ok=True)
    try:
        cmd = [exe]
        if cfg is not None:
            cmd += ["-c", str(cfg)]
        else:
            cmd += ["-n", files["net"][0]]
        route_files = files["routes"]
        if routes is not None:
            if isinstance(routes, Demand):
                route_files = [str(write_routes(routes, wd / "demand.rou.xml", car_following=car_follow_model))]
            else:
                route_files = [str(r) for r in ([routes] if isinstance(routes, (str, Path)) else routes)]
        if route_files:
            cmd += ["--route-files", ",".join(route_files)]
        additional = list(files["additional"])
        if plan:
            additional.append(str(write_tllogic(plan, wd / "plan.add.xml", program_id=PLAN_PROGRAM_ID)))
        lanes_out = wd / "lanedata.xml"
        if lane_data:  # one interval over the whole run (SUMO ends it at the last step)
            (wd / "lanedata.add.xml").write_text(
                f'<additional>\n    <laneData id="twins_lanes" file="{lanes_out.name}" period="1e9"'
                ' withInternal="true"/>\n</additional>\n')
            additional.append(str(wd / "lanedata.add.xml"))
        if additional:
            cmd += ["--additional-files", ",".join(additional)]
        tripinfo, stats, log = wd / "tripinfo.xml", wd / "statistics.xml", wd / "sumo.log"
        cmd += ["--tripinfo-output", str(tripinfo), "--tripinfo-output.write-unfinished", "true",
                "--statistic-output", str(stats), "--duration-log.statistics", "true", "--no-step-log", "true",
                "--log", str(log), "--seed", str(int(seed))]
        if begin is not None:
            cmd += ["--begin", str(begin)]
        if end is not None:
            cmd += ["--end", str(end)]
        if step_length is not None:
            cmd += ["--step-length", str(step_length)]
        if time_to_teleport is not None:
            cmd += ["--time-to-teleport", str(time_to_teleport)]
        if car_follow_model:
            cmd += ["--default.carfollowmodel", car_follow_model]
        cmd += [str(a) for a in extra_args]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise SumoNotFoundError(f"Could not start {exe!r}. {INSTALL_HINT}") from None
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not stats.is_file():
            msg = (log.read_text(errors="replace") if log.is_file() else "") + proc.stderr
            how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"failed (exit {proc.returncode})"
            raise RuntimeError(f"SUMO {how}: {' '.join(cmd)}\n{msg[-3000:]}")
        out = _metrics(tripinfo, stats, wall, step_length or 1.0, cmd)
        if lane_data:
            out["lanes"] = _lane_totals(lanes_out, Path(files["net"][0]))
        if trip_data:
            out["trips"] = [{"id": a["id"], "depart_s": float(a["depart"]) - float(a.get("departDelay", 0.0)),
                             "origin": a.get("departLane", "").rsplit("_", 1)[0],
                             "time_loss_s": float(a.get("timeLoss", "nan")), "duration_s": float(a["duration"]),
                             "arrived": float(a.get("arrival", -1)) >= 0}
                            for _, a in read_elements(tripinfo, {"tripinfo"})]
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def _lane_totals(path: Path, net_file: Path) -> dict[str, dict[str, float]]:
    """SUMO's ``laneData`` output summed over its intervals, per lane of a normal edge: time loss and
    vehicle-seconds, each internal (``:``) lane's counted in the normal lane its connection leads to, as the twin
    folds a junction's crossing into the lane after it. (Leaving them out instead dropped a sixth of SUMO's time
    loss on RESCO ingolstadt7, and made the short edges between a cluster's junctions look several times worse in
    the twin than in SUMO.) SUMO counts a vehicle on every lane its body touches, so the lanes add up to more than
    the trips' time loss (ingolstadt7: 12 %); the twin counts it on its front's lane only."""
    onward = {f"{a['from']}_{a['fromLane']}": f"{a['to']}_{a['toLane']}"
              for _, a in read_elements(net_file, {"connection"}) if a.get("from", "").startswith(":")}

    def normal(lid: str) -> str:
        for _ in range(len(onward)):  # an internal lane leads through at most a few more before a normal one
            if not lid.startswith(":") or lid not in onward:
                break
            lid = onward[lid]
        return lid

    out: dict[str, dict[str, float]] = {}
    for _, a in read_elements(path, {"lane"}):
        lid = normal(a.get("id", ""))
        if lid.startswith(":"):  # an internal lane leading nowhere (not in the network's connections)
            continue
        d = out.setdefault(lid, {"time_loss_s": 0.0, "sampled_s": 0.0})
        d["time_loss_s"] += float(a.get("timeLoss", 0.0))
        d["sampled_s"] += float(a.get("sampledSeconds", 0.0))
    return out


def _metrics(tripinfo: Path, stats: Path, wall: float, step: float, cmd: list[str]) -> dict:
    trips = [a for _, a in read_elements(tripinfo, {"tripinfo"})]
    arrived = [a for a in trips if float(a.get("arrival", -1)) >= 0]
    n = len(arrived)

    def mean(key: str, rows=arrived) -> float:
        return sum(float(a[key]) for a in rows) / len(rows) if rows else float("nan")

    st = {tag: a for tag, a in read_elements(stats, {"performance", "vehicles", "teleports",
                                                    "vehicleTripStatistics"})}
    veh, perf = st.get("vehicles", {}), st.get("performance", {})
    loaded = int(veh.get("loaded", 0))
    # RESCO's delay: time loss + departure delay of every tripinfo (arrived, and still running: write-unfinished),
    # plus the departure delay of the vehicles still waiting to enter, over all loaded vehicles
    lost = sum(float(a.get("timeLoss", 0)) + float(a.get("departDelay", 0)) for a in trips)
    lost += int(veh.get("waiting", 0)) * max(float(st.get("vehicleTripStatistics", {}).get("departDelayWaiting", 0)
                                                   or 0), 0.0)
    vehicle_steps = sum(float(a["duration"]) for a in trips) / step
    sim_time = float(perf.get("clockDuration", "nan"))
    tt = mean("duration")
    dd = mean("departDelay")
    return {
        "mean_travel_time_s": tt,
        "mean_delay_s": mean("timeLoss"),
        "mean_travel_time_with_depart_delay_s": tt + dd if n else float("nan"),
        "mean_depart_delay_s": dd,
        "mean_waiting_time_s": mean("waitingTime"),
        "mean_route_length_m": mean("routeLength"),
        "throughput_veh": n,
        "resco_delay_s": lost / loaded if loaded > 0 else float("nan"),
        "vehicles_loaded": loaded,
        "vehicles_inserted": int(veh.get("inserted", 0)),
        "vehicles_running": int(veh.get("running", 0)),
        "vehicles_waiting": int(veh.get("waiting", 0)),
        "teleports": int(st.get("teleports", {}).get("total", 0)),
        "wall_time_s": wall,
        "sim_time_s": sim_time,
        "vehicle_steps": vehicle_steps,
        "updates_per_s": vehicle_steps / sim_time if sim_time and sim_time > 0 else float("nan"),
        "sumo_updates_per_s": float(perf.get("vehicleUpdatesPerSecond", "nan")),
        "sim_begin_s": float(perf.get("begin", "nan")),
        "sim_end_s": float(perf.get("end", "nan")),
        "command": " ".join(cmd),
    }
