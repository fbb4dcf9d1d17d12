"""Every config file's presets pass the shared validation: a preset that
the README names must start, not fail on its first line (the SNA default
once did, on a length field its stages do not read)."""

import importlib
import os

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


def test_every_committed_run_config_still_builds_its_method():
  """docs/results holds config.json files saved by runs of many commits:
  each must still load (evaluate.read_config) and build its method and
  phases with today's code. A field a method added since is read with
  ``.get(old default)``; an attribute read of it fails here, as it would
  for a user restoring an older run."""
  import glob
  from fer_jax import evaluate
  from fer_jax.data import classes as classes_lib
  from fer_jax.registry import method_class
  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                      "docs", "results")
  paths = sorted(glob.glob(os.path.join(root, "**", "config.json"),
                           recursive=True))
  assert len(paths) >= 50
  methods = set()
  for path in paths:
    config = evaluate.read_config(os.path.dirname(path))
    n = len(classes_lib.resolve_class_set(config.data.classes))
    method = method_class(config.method)(
        config, num_classes=n,
        count_examples=lambda kind, role, c=config: c.train.batch_size)
    assert method.phases(), path
    methods.add(config.method)
  assert {"gndl", "baseline", "ifgan", "groupgan", "sna",
          "cgan_wsc"} <= methods
