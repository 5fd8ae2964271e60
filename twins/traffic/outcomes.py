"""Outcomes of a traffic run: the trips table, per-world metrics, per-group outcomes, the edge table, figures.

:class:`TrafficOutcomes` is the part of :class:`~twins.traffic.model.TrafficTwin` that turns its state and
accumulators into a :class:`~twins.core.twin.RunResult` (metric definitions as SUMO's tripinfo: travel
time = arrival − insertion, delay = time loss); it changes when a metric's definition does, the model
when the step does. :class:`TripsTable` builds the trips table only when it is read.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch

from twins.core.twin import LazyTables, RunResult, per_world_table

from . import kernels, transit

METRICS = (
    "mean_travel_time_s",
    "mean_delay_s",
    "throughput_veh",
    "vehicles_loaded",
    "vehicles_inserted",
    "vehicles_in_network_end",
    "vehicles_waiting_to_insert_end",
    "total_delay_veh_h",
    "mean_stops",
    "mean_depart_delay_s",
    "teleports",
)
# added when the scenario has bus lines
BUS_METRICS = (
    "bus_passenger_wait_s",  # mean over passengers who arrived; those still waiting at the end count until then
    "bus_passengers_boarded",
    "bus_passengers_waiting_end",
    "bus_travel_time_s",  # mean over completed bus trips: insertion to the end of the route, dwells included
    "bus_trips",
    "bus_dwell_s",  # mean dwell per stop visit
)


# the per-world columns of timeseries.parquet, one value per world and interval (TrafficTwin's DataCollector)
SERIES = ("vehicles_in_network", "mean_speed_mps", "arrivals", "queued_vehicles", "waiting_to_insert")


def series_table(model_vars: dict, W: int) -> pd.DataFrame:
    """timeseries.parquet from a DataCollector's model variables (``{name: [value per interval]}``, each value a
    ``[W]`` array or one value for every world): one row per interval and world, ``time_s`` and ``world`` first."""
    return per_world_table(model_vars, W, "time_s")


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Recorded frames as one table (an empty frame without any)."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class TripsTable:
    """The trips table of :meth:`TrafficTwin.trips`, built when called: one row per loaded vehicle from the numeric
    columns of :meth:`TrafficTwin._trip_data` and the flow and group names (strings cost most of the table, and
    a run that only needs its metrics never builds it). ``rows``: the rows of that table to keep (a boolean
    mask, as ``trips[mask]`` keeps them, the ``mode`` column dropped); None: every row. A plain object of
    arrays (picklable), independent of the twin once made."""

    def __init__(self, data: dict, names: dict, rows: np.ndarray | None = None):
        self.data, self.names, self.rows = data, names, rows

    def __call__(self) -> pd.DataFrame:
        d, names = self.data, self.names
        idx = d["_idx"]
        begin, dt = d["_begin_dt"]
        ins, arr = torch.from_numpy(d["insert_step"]), torch.from_numpy(d["arrive_step"])
        ins_t = torch.where(ins >= 0, begin + ins.double() * dt, torch.nan)
        arr_t = torch.where(arr >= 0, begin + arr.double() * dt, torch.nan)
        rows = d["_route"].reshape(-1).index_select(0, idx.to(d["_route"].device)).cpu()
        route = d["flow"]
        df = pd.DataFrame({
            "world": d["world"],
            "vehicle_id": d["_vehicle_id"].reshape(-1).index_select(0, idx).numpy(),
            "flow": names["flow"][route] if len(route) else [],
            "group": names["group"][route] if len(route) else [],
            "depart_s": d["depart_s"],
            "insert_s": ins_t.numpy(),
            "arrive_s": arr_t.numpy(),
            "travel_time_s": (arr_t - ins_t).numpy(),
            # the route this world drove (an intervention may have rerouted the flow)
            "route_length_m": d["_route_length_m"][rows].numpy(),
            **{k: d[k] for k in ("delay_s", "depart_delay_s", "stops")},
            "status": np.asarray(kernels.STATUS_NAMES, dtype=object)[d["status"]],
            **({"mode": np.where(route >= names["n_cars"], "bus", "car").astype(object)} if names["bus"] else {}),
        })
        if self.rows is None:
            return df
        return df[self.rows].drop(columns="mode")


class TrafficOutcomes:
    """Mixin of :class:`~twins.traffic.model.TrafficTwin`: its outcomes (reads the twin's state; changes nothing)."""

    def outcome_targets(self) -> tuple[list[str], dict[str, list[str]]]:
        metrics = list(self.metrics)
        groups = {"origin": ["mean_travel_time_s", "mean_delay_s", "throughput_veh"]}
        if self._approach_edges():
            groups["approach"] = ["delay_veh_h"]
        if self.bus_lines:
            metrics += [m for m in BUS_METRICS if m not in metrics]
            groups["mode"] = ["mean_travel_time_s", "mean_delay_s", "mean_wait_s"]
            groups["bus_line"] = ["mean_wait_s", "bus_travel_time_s"]
        return metrics, groups

    def _approach_edges(self) -> list[str]:
        """The signalized approaches: edges ending at a junction with a signal program."""
        net = self.scenario.network
        signalized = {j.id for j in net.junctions.values() if getattr(j, "tl", None)}
        return [e.id for e in net.edges.values() if e.to_node in signalized]

    def counterfactual_groups(self, result: RunResult) -> pd.DataFrame | None:
        """Per world and signalized approach: the delay accumulated on it (veh·h), a cheap per-approach outcome
        from the edge table."""
        edges = result.tables.get("edges") if result.tables else None
        approach = self._approach_edges()
        if edges is None or edges.empty or not approach:
            return None
        e = edges[edges["edge"].isin(approach)]
        return pd.DataFrame({"world": e["world"].to_numpy(), "group_kind": "approach", "group": e["edge"].to_numpy(),
                             "delay_veh_h": e["delay_s"].to_numpy(float) / 3600.0})

    def trips(self) -> pd.DataFrame:
        """All loaded vehicles: one row each (arrived ones have ``arrive_s``)."""
        return TripsTable(self._trip_data(), self._trip_names())()

    def _trip_names(self) -> dict:
        flows = self.scenario.demand.flows
        return {"flow": np.asarray(self._flow_names(), dtype=object),
                "group": np.asarray([f.group or f.id for f in flows] + [l.id for l in self.bus_lines], dtype=object),
                "n_cars": len(self.flow_ids), "bus": bool(self.bus_lines)}

    def _trip_data(self) -> dict:
        """The numeric columns of the trips table (numpy, one entry per loaded vehicle, world by world in slot
        order): the table's numbers as of now, without its strings."""
        st = self.state
        depart = self.pop.depart
        # finite (neither +inf nor nan, never -inf) and due: the comparison says both, without isfinite's passes
        loaded = depart <= self.time_s + 1e-9
        loaded &= depart > -torch.inf
        loaded &= self.pop.flow >= 0
        # the loaded slots' flat indices, in (world, slot) order as nonzero() lists them; each column one gather
        idx = loaded.view(-1).nonzero().squeeze(1)
        idx_dev = idx.to(self.device)
        sel = lambda x: x.reshape(-1).index_select(0, idx_dev if x.device == idx_dev.device else idx).cpu()  # noqa
        world = torch.div(idx, loaded.shape[1], rounding_mode="floor")
        ins = sel(st.insert_step)
        dep = sel(depart)
        # depart_delay_s: (insertion time, or now for those still waiting) - departure, as
        # where(ins >= 0, begin + ins·dt, now) - depart computes it, in one array
        dd = ins.double()
        dd.mul_(self.dt).add_(self.begin)
        dd.masked_fill_(ins < 0, self.time_s)
        dd.sub_(dep)
        # What is kept is narrowed where the values fit (status codes, flow indices, step numbers, slot indices):
        # the same numbers, and every column built from them the same, but less memory touched for the first
        # time, which is most of this call's time where the host supplies a VM's fresh pages slowly (~15 µs per
        # 4 KiB page on the 2-core VM, benchmarks/README.md). A wide column gathered, narrowed and freed lends
        # its pages to the next one.
        steps = torch.int32 if self.n_steps < 2**31 - 1 else torch.int64
        ins = ins.to(steps)
        route = self.drivers.route
        return {
            "world": world.numpy(),
            "flow": sel(self.pop.flow).to(torch.int32).numpy(),
            "status": sel(st.status).to(torch.int8).numpy(),
            "insert_step": ins.numpy(),
            "arrive_step": sel(st.arrive_step).to(steps).numpy(),
            "depart_s": dep.numpy(),
            "delay_s": sel(st.time_loss).double().numpy(),
            "depart_delay_s": dd.numpy(),
            "stops": sel(st.stops).numpy(),
            # read when the trips table is built: the population never changes; the route rows do where trips
            # are routed at insertion (then the rows as of now)
            "_idx": idx.to(torch.int32) if loaded.numel() < 2**31 else idx,
            "_vehicle_id": self.pop.vehicle_id,
            "_route": route.clone() if self._router is not None else route,
            "_route_length_m": self.routes_cpu.route_length_m,
            "_begin_dt": (self.begin, self.dt),
        }

    def _flow_names(self) -> list[str]:
        """Name of each population flow index: the scenario's flows, then the bus lines."""
        return list(self.flow_ids) + [f"bus:{l.id}" for l in self.bus_lines]

    def results(self) -> RunResult:
        """Per-world metrics and per-group outcomes by array reductions over the loaded vehicles; the trips
        tables (``trips``, with bus lines ``bus_trips``) are built when first read (written, say), from the
        numbers as of this call."""
        data, names = self._trip_data(), self._trip_names()
        # with bus lines: cars in ``trips`` (as without), buses in ``bus_trips``
        car = data["flow"] < names["n_cars"] if self.bus_lines else None
        cars = data if car is None else {k: v[car] for k, v in data.items() if not k.startswith("_")}
        done = self._arrived(cars)
        worlds = self._world_outcomes(cars, done)
        groups = self._group_outcomes(done, names)
        metrics = list(METRICS)
        extra_tables = {}
        if self.bus_lines:
            bus_w, bus_g, extra_tables = self._bus_outcomes(data, names)
            worlds = pd.concat([worlds, bus_w], axis=1)
            metrics += list(BUS_METRICS)
            groups = pd.concat([groups, bus_g], ignore_index=True)
        # the long tables are put together when read (written, say): the trips from this call's numbers, the
        # interval tables from the frames recorded so far
        tables = LazyTables()
        tables.lazy("trips", TripsTable(data, names, rows=car))
        tables.lazy("timeseries", functools.partial(series_table, {k: list(v) for k, v in
                                                                   self.datacollector.model_vars.items()}, self.W))
        tables.lazy("detectors", functools.partial(_stack, list(self._detector_rows)))
        tables["edges"] = self.edge_table()
        if self._trajectories:
            tables.lazy("trajectories", functools.partial(_stack, list(self._trajectories)))
        for k, v in extra_tables.items():
            tables.lazy(k, v) if callable(v) and not isinstance(v, pd.DataFrame) else tables.__setitem__(k, v)
        return RunResult(worlds=worlds, metrics=metrics, tables=tables, groups=groups)

    def _travel_time(self, trips: dict, mask: np.ndarray) -> np.ndarray:
        """``travel_time_s`` of the trips table (arrival − insertion) at the rows in ``mask``: the same arithmetic
        on those rows only."""
        out = []
        for steps in (trips["arrive_step"][mask], trips["insert_step"][mask]):
            t = steps.astype(np.float64)  # begin + step·dt, as the table computes it (the same IEEE operations)
            t *= self.dt
            t += self.begin
            if (steps < 0).any():  # not (yet) arrived or inserted: nan
                t[steps < 0] = np.nan
            out.append(t)
        out[0] -= out[1]
        return out[0]

    def _arrived(self, trips: dict) -> dict:
        """The arrived rows of ``trips`` (:meth:`_trip_data` columns): world, flow, travel time, delay, stops."""
        ix = np.flatnonzero(trips["status"] == kernels.ARRIVED)
        out = {k: trips[k][ix] for k in ("world", "flow", "delay_s", "stops", "insert_step", "arrive_step")}
        out["travel_time_s"] = self._travel_time(out, slice(None))
        return out

    def _world_outcomes(self, trips: dict, done: dict) -> pd.DataFrame:
        """The vehicle metrics of every world (:data:`METRICS`) from the trips' columns (:meth:`_trip_data`,
        world by world; ``done``: their :meth:`_arrived` rows), in one pass: counts by ``bincount``, and each
        world's sums and means as pandas computed them on that world's rows of the trips table (numpy's pairwise
        sum over the same values in the same order, bit for bit)."""
        W = self.W
        world = trips["world"]
        code = trips["status"]
        # vehicles per world and status (waiting, running, arrived) in one count
        key = world * 3
        key += code
        n = np.bincount(key, minlength=3 * W).reshape(W, 3).astype(np.int64)
        del key
        n_wait, n_run, n_done = n[:, kernels.WAITING], n[:, kernels.RUNNING], n[:, kernels.ARRIVED]

        def sums(values, counts):
            # each world's sum of its rows (``values`` world by world, ``counts`` rows each)
            bounds = np.concatenate([[0], np.cumsum(counts)])
            return np.array([values[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])], dtype=np.float64)

        def mean(total, counts):
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(counts > 0, total / np.maximum(counts, 1).astype(np.float64), np.nan)

        n_all = n.sum(1)
        dd = trips["depart_delay_s"]
        ins = code != kernels.WAITING
        return pd.DataFrame({
            "world": np.arange(W, dtype=np.int64),
            "replication": self.worlds.replication.cpu().numpy().astype(np.int64),
            "arm": self.worlds.arm.cpu().numpy().astype(np.int64),
            "mean_travel_time_s": mean(sums(done["travel_time_s"], n_done), n_done),
            "mean_delay_s": mean(sums(done["delay_s"], n_done), n_done),
            "throughput_veh": n_done,
            "vehicles_loaded": n_all,
            "vehicles_inserted": n_run + n_done,
            "vehicles_in_network_end": n_run,
            "vehicles_waiting_to_insert_end": n_wait,
            # time lost while driving, plus time spent waiting to enter, in vehicle-hours
            "total_delay_veh_h": (sums(trips["delay_s"], n_all) + sums(dd, n_all)) / 3600.0,
            # whole numbers: their float sums are exact in any order
            "mean_stops": mean(np.bincount(done["world"], weights=done["stops"], minlength=W), n_done),
            "mean_depart_delay_s": mean(sums(dd[ins], n_run + n_done), n_run + n_done),
            "teleports": self.teleports.cpu().numpy().astype(np.int64),  # rule 12, as SUMO counts them
        })

    def _bus_outcomes(self, data: dict, names: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Per world the ``bus_*`` metrics; per world and group the ``mode`` and ``bus_line`` outcomes;
        the tables ``bus_trips`` (built when read), ``bus_stops`` (one row per stop visit) and ``bus_waits``
        (per world and stop). ``data``: :meth:`_trip_data` of every loaded vehicle; the means are pandas'
        groupby means over the same rows in the same order as on the trips table, without its strings."""
        W, tr = self.W, self.transit
        t_end = self.time_s
        waiting, censored = transit.still_waiting(t_end, self.pax_served, self.pax_arrivals, self.pax_cum)
        served = self.pax_served.cpu().numpy()
        waiting, censored, boarded_wait = waiting.cpu().numpy(), censored.cpu().numpy(), self.pax_wait.cpu().numpy()
        visits = pd.concat(self._visits, ignore_index=True) if self._visits else pd.DataFrame(
            columns=["time_s", "world", "vehicle_id", "line", "stop", "boardings", "alightings", "dwell_s", "load",
                     "wait_sum_s"])
        bus = data["flow"] >= names["n_cars"]
        buses = pd.DataFrame({"world": data["world"][bus], "group": names["group"][data["flow"][bus]],
                              "travel_time_s": self._travel_time(data, bus)})
        done = buses[data["status"][bus] == kernels.ARRIVED]
        line_of_stop = tr.line_of_stop.cpu().numpy()

        def mean_wait(cols):
            n = served[:, cols].sum(1) + waiting[:, cols].sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, (boarded_wait[:, cols].sum(1) + censored[:, cols].sum(1)) / n, np.nan)

        every = np.arange(len(tr.stop_ids))
        dwell = visits.groupby("world")["dwell_s"].mean() if len(visits) else pd.Series(dtype=float)
        tt = done.groupby("world")["travel_time_s"].mean()
        worlds = pd.DataFrame({
            "bus_passenger_wait_s": mean_wait(every),
            "bus_passengers_boarded": served.sum(1),
            "bus_passengers_waiting_end": waiting.sum(1),
            "bus_travel_time_s": tt.reindex(range(W)).to_numpy(float),
            "bus_trips": done.groupby("world").size().reindex(range(W), fill_value=0).to_numpy(),
            "bus_dwell_s": dwell.reindex(range(W)).to_numpy(float),
        })
        car_done = ~bus & (data["status"] == kernels.ARRIVED)
        cars = pd.DataFrame({"world": data["world"][car_done], "travel_time_s": self._travel_time(data, car_done),
                             "delay_s": data["delay_s"][car_done]})
        car_g = cars.groupby("world").agg(mean_travel_time_s=("travel_time_s", "mean"),
                                          mean_delay_s=("delay_s", "mean")).reindex(range(W))
        groups = [pd.DataFrame({"world": np.arange(W), "group_kind": "mode", "group": "car_drivers",
                                "mean_travel_time_s": car_g["mean_travel_time_s"].to_numpy(float),
                                "mean_delay_s": car_g["mean_delay_s"].to_numpy(float)}),
                  pd.DataFrame({"world": np.arange(W), "group_kind": "mode", "group": "bus_passengers",
                                "mean_wait_s": worlds["bus_passenger_wait_s"].to_numpy(float)})]
        for i, line in enumerate(self.bus_lines):
            lt = done[done["group"] == line.id].groupby("world")["travel_time_s"].mean().reindex(range(W))
            groups.append(pd.DataFrame({"world": np.arange(W), "group_kind": "bus_line", "group": line.id,
                                        "mean_wait_s": mean_wait(np.nonzero(line_of_stop == i)[0]),
                                        "bus_travel_time_s": lt.to_numpy(float)}))
        waits = pd.DataFrame({
            "world": np.repeat(np.arange(W), len(tr.stop_ids)),
            "stop": np.tile(np.asarray(tr.stop_ids, dtype=object), W),
            "boarded": served.reshape(-1), "waiting_end": waiting.reshape(-1),
            "wait_boarded_s": boarded_wait.reshape(-1), "wait_censored_s": censored.reshape(-1)})
        return worlds, pd.concat(groups, ignore_index=True), {"bus_trips": TripsTable(data, names, rows=bus),
                                                              "bus_stops": visits, "bus_waits": waits}

    def _group_outcomes(self, done: dict, names: dict) -> pd.DataFrame:
        """Per world and origin group of the arrived vehicles (``done``: :meth:`_arrived`): mean travel time,
        mean delay and count; pandas' groupby over the same rows in the same order as on the trips table (its
        means, bit for bit), keyed by integers that sort as the (world, group name) pairs do instead of strings."""
        if not len(done["world"]):
            return pd.DataFrame(columns=["world", "group_kind", "group", "mean_travel_time_s", "mean_delay_s"])
        uniq = np.asarray(sorted(set(names["group"].tolist())), dtype=object)
        G = len(uniq)
        rank = np.searchsorted(uniq, names["group"])  # group code of each flow, in the names' sort order
        key = done["world"] * G
        key += rank[done["flow"]]
        gb = pd.DataFrame({"mean_travel_time_s": done["travel_time_s"],
                           "mean_delay_s": done["delay_s"]}).groupby(key, sort=True)
        m, n = gb.mean(), gb.size()
        k = m.index.to_numpy()
        g = pd.DataFrame({"world": k // G, "group": uniq[k % G],
                          "mean_travel_time_s": m["mean_travel_time_s"].to_numpy(),
                          "mean_delay_s": m["mean_delay_s"].to_numpy(), "throughput_veh": n.to_numpy()})
        g.insert(1, "group_kind", "origin")
        return g

    def edge_table(self) -> pd.DataFrame:
        """Per world and edge: vehicle-seconds, mean speed, delay (s) accumulated over the run."""
        W, acc = self.W, self._lane_sums()
        rows = []
        net = self.scenario.network
        for i, e in enumerate(self.net_cpu.edge_ids):
            a = acc[:, self._edge_lanes[i], :].sum(axis=1)
            edge = net.edges[e]
            shape = edge.lanes[0].shape
            (x1, y1), (x2, y2) = (shape[0], shape[-1]) if len(shape) >= 2 else (
                (net.junctions[edge.from_node].x, net.junctions[edge.from_node].y),
                (net.junctions[edge.to_node].x, net.junctions[edge.to_node].y))
            with np.errstate(invalid="ignore", divide="ignore"):
                rows.append(pd.DataFrame({"world": np.arange(W), "edge": e, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                                          "lanes": len(edge.lanes), "length_m": edge.length,
                                          "vehicle_s": a[:, 0] * self.dt,
                                          "mean_speed_mps": np.where(a[:, 0] > 0, a[:, 1] / a[:, 0], np.nan),
                                          "delay_s": a[:, 2]}))
        return pd.concat(rows, ignore_index=True)

    def _lane_sums(self) -> np.ndarray:
        """``[W, L, 3]`` per world and lane, over the run so far: vehicle-steps, speed sum, time loss (s)."""
        return (self.lane_acc_total + self.lane_acc_interval).view(self.W, self.net.n_lanes, 3).cpu().numpy()

    def lane_table(self) -> pd.DataFrame:
        """Per world and lane (SUMO lane ids): vehicle-seconds and time loss (s) accumulated over the run, the
        twin's side of SUMO's ``laneData`` (a vehicle crossing a junction counts on the lane it is entering)."""
        W, L, acc = self.W, self.net.n_lanes, self._lane_sums()
        lanes = np.tile(np.asarray(self.net_cpu.lane_ids, dtype=object), W)
        return pd.DataFrame({"world": np.repeat(np.arange(W), L), "lane": lanes,
                             "vehicle_s": acc[:, :, 0].reshape(-1) * self.dt, "time_loss_s": acc[:, :, 2].reshape(-1)})

    def write_figures(self, result: RunResult, figdir) -> list[str]:
        """The network map coloured by delay and the network time series."""
        from twins import plots

        e = result.tables["edges"].assign(delay_veh_h=lambda d: d["delay_s"] / 3600.0)
        ax = plots.network_map(e, "delay_veh_h", label="delay accumulated on the edge (veh·h, mean over worlds)")
        ax.set_title(f"{self.scenario.name}: where delay accumulates")
        plots.save(ax, figdir / "network_delay.png")
        fig = plots.timeseries(result.tables["timeseries"], ["vehicles_in_network", "mean_speed_mps", "arrivals",
                                                             "queued_vehicles", "waiting_to_insert"])
        plots.save(fig, figdir / "timeseries.png")
        return ["network_delay.png", "timeseries.png"]
