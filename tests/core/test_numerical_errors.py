"""A NaN in a kernel is a clear error naming the quantity, the world, the entity and the time, raised at
the next observation point; the run's earlier observations stay recorded."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import JunctionScenario, junction_scenario
from twins.core.errors import NumericalError
from twins.core.worlds import WorldBatch
from twins.molecular.model import MolecularTwin
from twins.traffic.model import TrafficTwin


def test_traffic_nan_names_world_vehicle_and_time():
    s = OmegaConf.merge(OmegaConf.structured(JunctionScenario), {"flows_veh_h": {"N": 600, "E": 600, "S": 600, "W": 600}})
    tw = TrafficTwin(junction_scenario(s, 600.0), WorldBatch.replications(0, 3), dt=1.0, horizon=600.0, interval_s=60.0)
    for _ in range(130):
        tw.step()
    slot = int(torch.nonzero(tw.state.status[1] == 1)[-1])  # a vehicle of world 1 on the road
    tw.drivers.tau[1, slot] = math.nan  # a broken parameter (as a bad intervention could set)
    tw._veh_cache = None
    with pytest.raises(NumericalError) as e:
        tw.run(progress=False)
    err = e.value
    assert (err.world, err.entity) == (1, slot) and err.quantity in ("position (m)", "speed (m/s)")
    assert f"world 1, entity {slot}" in str(err) and "tau" in str(err) and "finite" in str(err)
    # at the next interval close; the two before are kept
    assert err.t == 180.0 and len(tw.datacollector.model_vars["time_s"]) == 2


def test_molecular_nan_names_world_particle_and_time():
    m = MolecularTwin(WorldBatch.replications(0, 2), dt=0.01, horizon=1.0, box=30.0,
                      cells=(("high", 20, 0.0, 0.5), ("low", 8, 0.5, 1.0)), n_offtarget=10, dose=40,
                      dosing_interval=0.4, k_el=0.5, record_every=5)
    for _ in range(12):
        m.step()
    m.state.pos[1, 3, 0] = math.nan
    with pytest.raises(NumericalError) as e:
        m.run(progress=False)
    assert (e.value.world, e.value.entity) == (1, 3) and "dt" in str(e.value)
    assert e.value.t == pytest.approx(0.15)  # the next recording point after step 12
