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


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "docs", "results")


def committed_config_paths():
  """Every config.json a run saved under docs/results."""
  import glob
  return sorted(glob.glob(os.path.join(RESULTS, "**", "config.json"),
                          recursive=True))


def _leaves(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix[:-1]}
  return set().union(*[_leaves(v, f"{prefix}{k}.") for k, v in tree.items()]
                     or [set()])


def committed_configs_covering_missing_fields():
  """Per method, committed run configs (docs/results) chosen greedily until
  every field that some of its configs lack is lacking in a chosen one:
  the few configs whose steps, traced, read each field older runs miss."""
  import json
  by_method = {}
  for path in committed_config_paths():
    with open(path) as f:
      config = json.load(f)
    by_method.setdefault(config["method"], []).append((path,
                                                       _leaves(config)))
  chosen = []
  for method, items in sorted(by_method.items()):
    union = set().union(*[fields for _, fields in items])
    missing = {p: union - fields for p, fields in items}
    left = set().union(*missing.values())
    chosen.append(items[0][0])  # every method's step traced at least once
    left -= missing[items[0][0]]
    while left:
      best = max(missing, key=lambda p: len(missing[p] & left))
      chosen.append(best)
      left -= missing[best]
  return chosen


def test_every_committed_run_config_still_builds_its_method():
  """docs/results holds config.json files saved by runs of many commits:
  each must still load (evaluate.read_config) and build its method and
  phases with today's code. A field a method added since is read with
  ``.get(old default)``; an attribute read of it fails here, as it would
  for a user restoring an older run."""
  from fer_jax import evaluate
  from fer_jax.data import classes as classes_lib
  from fer_jax.registry import method_class
  paths = committed_config_paths()
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


def test_committed_run_configs_trace_every_phase_step():
  """The step of every phase, traced (shapes only) under the committed
  configs that lack the fields later commits added: a step reading a new
  field by attribute fails here, not for the user resuming an old run."""
  import sys
  import jax
  from fer_jax import evaluate
  from fer_jax.registry import method_class
  sys.path.insert(0, os.path.join(RESULTS, "..", "..", "benchmarks"))
  import throughput  # pylint: disable=import-outside-toplevel
  chosen = committed_configs_covering_missing_fields()
  assert len(chosen) <= 20, chosen  # what keeps this test fast
  for path in chosen:
    config = evaluate.read_config(os.path.dirname(path))
    phases = method_class(config.method)(
        config, num_classes=7, count_examples=lambda k, r: 10_000).phases()
    for phase in phases:
      # throughput.one_step: the trainer's dispatch of the phase's step,
      # with random frames standing in for the data set.
      step, loop, host = throughput.one_step(
          config.copy_and_resolve_references(), None, phase.name)
      jax.eval_shape(step, loop, host, None)
