"""The gridlock gate's evidence counts the vehicles the twin teleported out of a jam (kernels rule 12): each
stood at the front of its lane for SUMO's time-to-teleport, so it was stuck even though it then left."""
from __future__ import annotations

import pandas as pd

from twins.ethics.evidence import stuck_vehicles


def test_teleported_vehicles_count_as_stuck():
    trips = pd.DataFrame({"world": [0, 0, 1, 1], "status": ["running", "arrived", "running", "waiting"],
                          "insert_s": [0.0, 0.0, 700.0, float("nan")], "depart_s": [0.0, 0.0, 700.0, 100.0]})
    worlds = pd.DataFrame({"world": [0, 1], "arm": [0, 1], "teleports": [2, 3]})
    s = stuck_vehicles(trips, worlds, t_end=900.0, after_s=300.0)
    # world 0 (baseline): one vehicle 900 s in the network + 2 teleports; world 1 (policy): one waiting 800 s + 3
    assert s["baseline_max"] == 3 and s["max"] == 4 and s["per_world"] == [4]
    without = stuck_vehicles(trips, worlds.drop(columns="teleports"), t_end=900.0, after_s=300.0)
    assert without["baseline_max"] == 1 and without["max"] == 1
