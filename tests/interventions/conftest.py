from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR  # registers the structured configs
from twins.core import runner


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=["output.figures=false", "progress=false", *overrides])


@pytest.fixture
def run_cf(tmp_path):
    """Run ``overrides`` through the run task into a temp folder; returns (folder, effects DataFrame)."""
    def go(*overrides: str, name: str = "run"):
        out = Path(tmp_path) / name
        runner.run(compose_cfg(*overrides), out)
        eff = out / "effects.parquet"
        return out, (pd.read_parquet(eff) if eff.exists() else None)

    return go
