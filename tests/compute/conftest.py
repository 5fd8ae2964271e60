import pytest
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR  # registers the structured configs


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=["output.figures=false", "progress=false", *overrides])


@pytest.fixture
def cfg_of():
    return compose_cfg
