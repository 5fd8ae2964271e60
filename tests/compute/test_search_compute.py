"""The search runs its batches through the compute plan: a planned batch size when search.batch is
null, and an energy account per confirmed policy in best_policy.json and the folder's manifest."""
import json

from interventions.search_config import search_from_config
from twins.compute.plan import MIN_SEARCH_ROUNDS

from .conftest import compose_cfg


def test_search_planned_batch_and_energy_per_confirmed_policy(tmp_path):
    cfg = compose_cfg("scenario=junction", "intervention=signal_timing", "horizon_s=60", "replications=2",
                      "search.budget=4", "search.batch=null", "search.sampler=random", "search.confirm.top=1",
                      "search.confirm.during_search=false", "compute.max_worlds_per_chunk=3")
    res = search_from_config(cfg, tmp_path)
    best = json.loads((tmp_path / "best_policy.json").read_text())
    # memory is plentiful here, so the batch follows the budget's rounds: 4 / MIN_SEARCH_ROUNDS = 1
    assert best["batch"] == max(1, 4 // MIN_SEARCH_ROUNDS) and res.candidates["batch"].nunique() == 4
    comp = best["compute"]
    n = res.confirmed["trial"].nunique()
    assert comp["confirmed_policies"] == n >= 1
    assert comp["energy_total_j"] > 0 and comp["energy"]["cpu"]["method"] in ("estimate", "rapl")
    assert abs(comp["energy_per_confirmed_policy_j"] - comp["energy_total_j"] / n) < 1e-2
    # chunks of <= 3 worlds: each search batch (2 arms × 2 replications) in 2, the confirmation
    # ((n + 1) arms × 4 held-out replications) in ceil(4 (n + 1) / 3)
    assert comp["chunks"] == 4 * 2 + -(-4 * (n + 1) // 3)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["task"] == "search" and man["accounting"]["energy_total_j"] == comp["energy_total_j"]
    assert man["device"].startswith("cpu (") and "driver_device" not in man  # local: the driver ran the worlds
