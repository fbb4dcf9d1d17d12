"""Every config file's presets pass the shared validation: a preset that
the README names must start, not fail on its first line (the SNA default
once did, on a length field its stages do not read)."""

import importlib

import pytest

from fer_jax import config_lib

# (config module, its presets: "" is the synthetic default).
PRESETS = [
    ("baseline", ("",)),
    ("gndl", ("", "tiny", "oracle", "baseline")),
    ("ifgan", ("", "tiny", "baseline")),
    ("groupgan", ("", "tiny", "ckplus_oulu")),
    ("sna", ("", "tiny", "affectnet", "ckplus", "oulu_casia")),
    ("cgan_wsc", ("", "tiny")),
]


@pytest.mark.parametrize("name, presets", PRESETS)
def test_every_preset_validates(name, presets):
  module = importlib.import_module(f"fer_jax.configs.{name}")
  for preset in presets:
    config = module.get_config(preset)
    config_lib.validate(config)
    assert config.method in (name, "baseline") or name == "baseline"
