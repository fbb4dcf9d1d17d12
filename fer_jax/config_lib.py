"""The shared config schema, its validation, and workdir checks.

``base_config()`` holds every field the trainer and the data layer read, with
the embedded-default values; each ``configs/<method>.py`` starts from it and
overrides. ``synthetic`` and ``tiny`` are the presets every config shares:
its default run on the synthetic set, and its ``:tiny`` run for tests. Validation runs before any data is read or any array is built, so a
wrong field fails in a second with its name in the message.
"""

from __future__ import annotations

import os

import ml_collections

from fer_jax import files
from fer_jax.data import classes as classes_lib
from fer_jax.data import protocols

PROTOCOLS = ("folds", "official")
SELECT_BY = ("last", "val")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  # Weights file from `python -m fer_jax.tools.import_weights` (ImageNet
  # torchvision weights): the backbone starts from it (GNDL, IF-GAN's E and
  # the baseline: their ResNet; GroupGAN: its BaseNets). "" = from scratch.
  c.init_from = ""

  c.data = d = ml_collections.ConfigDict()
  d.name = "fer_synth"
  d.data_dir = ""  # "" = $FER_JAX_DATA_DIR or ~/tensorflow_datasets
  d.builder_config = ""
  # Only read for fer_synth: the procedural set's size (built on first use).
  # 96 subjects: with fewer, every method overfits the training identities
  # (24 subjects: train 70% / test 34% after 1200 steps).
  d.synth = ml_collections.ConfigDict(dict(
      num_subjects=96, sequences_per_subject=7, num_frames=10,
      image_size=64, seed=0, profile="classic"))
  d.in_memory = True  # decode every frame once into host memory ...
  d.in_memory_max_gb = 8.0  # ... unless they need more than this
  # Injected label noise on the training split only (a rate, deterministic
  # from config.seed): symmetric (any other class) | pairs (k -> k + 1).
  d.label_noise = 0.0
  d.label_noise_kind = "symmetric"
  d.classes = "basic6+contempt"  # a named set or comma-separated names
  d.role = "peak"  # frames trained and evaluated on: peak | weak | all
  d.peak_frames = 3  # last k frames of a sequence are 'peak'
  d.weak_frames = (6, 8)  # 1-based inclusive range of 'weak' frames
  # folds: k-fold by subject (or sequence, fold_by) over the `train` split.
  # official: the set's own split (RAF-DB, AffectNet: no subjects recorded):
  # train on `train`, test on `test`; val = the builder's `validation` split
  # where it has one, else val_fraction of `train` held out by split_seed.
  d.protocol = "folds"
  d.val_fraction = 0.1
  d.num_folds = 10
  d.fold = 0
  d.val_folds = 0
  d.all_folds = False  # run every fold in turn, write cv_report.json
  d.split_seed = 0
  d.fold_by = "subject"  # folds group frames by subject | sequence
  d.resize = 128  # frames are scaled to this, then cropped to `crop`
  d.crop = 112
  d.flip = True
  d.rotate_deg = 0.0
  d.noise_std = 0.0
  d.grey = False
  d.num_threads = 2  # Grain reader threads
  # Training frames in device memory, gathered inside the step (only indices
  # travel): auto = when they fit device_memory_gb per device | on | off.
  d.device_resident = "auto"
  d.device_memory_gb = 0.0  # 0 = a quarter of the device's memory

  c.model = m = ml_collections.ConfigDict()
  m.arch = "resnet18"
  m.base_width = 64
  m.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay fp32)
  # The same math where XLA's GPU lowering is slow (fer_jax.models.
  # fast_layers); False: the plain layers, for ablations and FLOP counts.
  m.fast_layers = True

  c.optim = o = ml_collections.ConfigDict()
  o.name = "adam"
  o.lr = 1e-3
  o.b1 = 0.9
  o.b2 = 0.999
  o.momentum = 0.9
  o.weight_decay = 0.0
  o.schedule = "constant"  # constant | step | cosine | plateau
  o.decay_epochs = 10.0
  o.decay_factor = 0.1
  o.plateau_window = 50  # plateau: steps whose mean loss is one measurement
  o.plateau_patience = 10  # measurements without improvement before decay
  o.plateau_min_scale = 0.1  # lowest lr multiplier

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 128
  t.eval_batch_size = 128
  t.num_epochs = 150.0
  t.num_steps = 0  # > 0 overrides num_epochs
  t.log_every = 50
  t.checkpoint_every = 500
  t.eval_every = 0  # 0 = only the final test evaluation
  # Which state the final test evaluation (and --mode=eval) scores: last |
  # val = the best by validation accuracy (its own checkpoint, best/, kept
  # apart from checkpoints/: never rotated away, never resumed from).
  t.select_by = "last"
  t.max_to_keep = 3
  t.async_checkpoint = True
  # A step whose loss or updated state has a non-finite value is never
  # applied. stop: the run stops there | skip: it goes on, unless more than
  # max_skipped_fraction of the last skip_window steps were skipped.
  t.nonfinite = "stop"  # stop | skip
  t.max_skipped_fraction = 0.2
  t.skip_window = 100
  t.progress_bar = True
  # Optimizer steps per dispatch: a lax.scan over this many stacked batches,
  # so small steps are not bound by launch overhead. Logs, checkpoints and
  # evaluations still happen at their exact steps (a group ends there).
  t.steps_per_dispatch = 1
  # With data.all_folds: the k folds' models trained at once, stacked and
  # vmapped in one jitted step per dispatch (fer_jax/batched_folds.py);
  # each fold still writes its own fold_<k>/ as a separate run would.
  t.batch_folds = False
  return c


def synthetic(c):
  """What every config's synthetic preset shares: the procedural set at
  base_config's size, 4 subject folds, width-16 networks, step counts
  instead of epochs, a log every 50 steps, a checkpoint every 250 and no
  evaluation before the last. The config then sets its sizes and schedule."""
  c.data.name = "fer_synth"
  c.data.num_folds = 4
  c.model.base_width = 16
  c.train.update(num_epochs=0, eval_batch_size=64, log_every=50,
                 checkpoint_every=250, eval_every=0)
  return c


def tiny(c):
  """What every ``:tiny`` preset shares, over its synthetic preset: a tiny
  synthetic set, 3 folds, width-8 networks, no progress bar, synchronous
  checkpoints. A run takes seconds: the tests' configs, and a smoke run."""
  c.data.synth.update(num_subjects=6, num_frames=8, image_size=32)
  c.data.num_folds = 3
  c.model.base_width = 8
  c.train.update(progress_bar=False, async_checkpoint=False, eval_every=0)
  return c


def _require(cond: bool, field: str, message: str) -> None:
  if not cond:
    raise ValueError(f"config.{field}: {message}")


def validate(config, restoring: bool = False) -> None:
  """Raises ValueError naming the first bad field. ``restoring``: a saved
  run's config (``init_from`` was read when it started, and may be gone)."""
  from fer_jax.data import registry  # pylint: disable=import-outside-toplevel
  from fer_jax.registry import METHODS  # pylint: disable=import-outside-toplevel
  _require(config.method in METHODS, "method",
           f"{config.method!r} is not one of {', '.join(sorted(METHODS))}")
  d, t = config.data, config.train
  for name in d.name.split("+"):  # "a+b" mixes data sets
    _require(name in registry.BUILDERS, "data.name",
             f"{name!r} is not one of {', '.join(sorted(registry.BUILDERS))}")
  # .get: a config.json saved before the field existed means 'folds'.
  protocol = d.get("protocol", "folds")
  _require(protocol in PROTOCOLS, "data.protocol",
           f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
  _require(not (d.all_folds and protocol == "official"), "data.all_folds",
           "True needs data.protocol='folds': data.protocol='official' has "
           "one train/test split, not folds")
  _require(protocol == "folds" or 0 <= d.val_fraction < 1,
           "data.val_fraction", f"{d.get('val_fraction')} must be in [0, 1)")
  _require(d.num_folds >= 2, "data.num_folds",
           f"{d.num_folds} must be >= 2")
  _require(0 <= d.fold < d.num_folds, "data.fold",
           f"{d.fold} is out of range 0..{d.num_folds - 1}")
  _require(0 <= d.val_folds <= d.num_folds - 2, "data.val_folds",
           f"{d.val_folds} must be in 0..{d.num_folds - 2}")
  _require(0.0 <= d.label_noise < 1.0, "data.label_noise",
           f"{d.label_noise} must be a rate in [0, 1)")
  _require(d.label_noise_kind in protocols.LABEL_NOISE_KINDS,
           "data.label_noise_kind",
           f"{d.label_noise_kind!r} is not one of "
           f"{', '.join(protocols.LABEL_NOISE_KINDS)}")
  _require(d.fold_by in protocols.FOLD_BY, "data.fold_by",
           f"{d.fold_by!r} is not one of {', '.join(protocols.FOLD_BY)}")
  _require(d.role in protocols.ROLES, "data.role",
           f"{d.role!r} is not one of {protocols.ROLES}")
  _require(0 < d.crop <= d.resize, "data.crop",
           f"{d.crop} must be in 1..data.resize={d.resize}")
  _require(len(d.weak_frames) == 2 and 1 <= d.weak_frames[0]
           <= d.weak_frames[1], "data.weak_frames",
           f"{tuple(d.weak_frames)} must be a 1-based range (first, last)")
  _require(isinstance(d.classes, str), "data.classes",
           f"{d.classes!r} must be a string: a class set's name (e.g. "
           f"'basic6') or comma-separated class names")
  try:
    classes_lib.resolve_class_set(d.classes)
  except ValueError as e:
    raise ValueError(f"config.data.classes: {e}") from None
  _require(t.batch_size > 0, "train.batch_size", "must be positive")
  _require(t.eval_batch_size > 0, "train.eval_batch_size", "must be positive")
  _require(t.log_every > 0, "train.log_every", "must be positive")
  _require(t.checkpoint_every > 0, "train.checkpoint_every",
           "must be positive")
  _require(t.num_steps > 0 or t.num_epochs > 0, "train.num_epochs",
           "give num_epochs > 0 or num_steps > 0")
  _require(t.get("steps_per_dispatch", 1) >= 1, "train.steps_per_dispatch",
           f"{t.get('steps_per_dispatch')} must be >= 1")
  _require(d.get("device_resident", "off") in ("auto", "on", "off"),
           "data.device_resident",
           f"{d.get('device_resident')!r} is not 'auto', 'on' or 'off'")
  _require(not t.get("batch_folds", False) or d.all_folds,
           "train.batch_folds", "True trains the folds of data.all_folds "
           "at once: set data.all_folds=True, or drop train.batch_folds")
  select_by = t.get("select_by", "last")
  _require(select_by in SELECT_BY, "train.select_by",
           f"{select_by!r} is not one of {', '.join(SELECT_BY)}")
  _require(select_by != "val" or t.eval_every > 0, "train.eval_every",
           f"{t.eval_every}: train.select_by='val' needs validation during "
           "training: set train.eval_every > 0")
  _require(t.nonfinite in ("stop", "skip"), "train.nonfinite",
           f"{t.nonfinite!r} is not 'stop' or 'skip'")
  _require(0 <= t.get("max_skipped_fraction", 0.2) <= 1,
           "train.max_skipped_fraction",
           f"{t.get('max_skipped_fraction')} must be a share in [0, 1]")
  _require(t.get("skip_window", 100) >= 1, "train.skip_window",
           f"{t.get('skip_window')} must be >= 1 steps")
  _require(config.model.dtype in ("float32", "bfloat16"), "model.dtype",
           f"{config.model.dtype!r} is not 'float32' or 'bfloat16'")
  init_from = "" if restoring else config.get("init_from", "")
  # A remote file (gs://...) is checked when it is read, at initialisation.
  _require(not init_from or "://" in init_from
           or os.path.isfile(os.path.expanduser(init_from)),
           "init_from", f"{init_from!r} is not a file (write one with "
           "python -m fer_jax.tools.import_weights)")


def check_workdir(workdir: str) -> None:
  """Creates ``workdir`` (local or gs://) and proves it writable, or says
  why it is not."""
  remote = files.is_remote(workdir)
  try:
    files.makedirs(workdir)
    probe = files.join(workdir, ".fer_jax_write_probe")
    files.write_text_atomic(probe, "ok")
    files.remove(probe)
  except OSError as e:
    raise ValueError(f"--workdir={workdir} is not a writable directory: "
                     f"{e.strerror or e}") from None
  except Exception as e:  # noqa: BLE001 (each object store raises its own)
    if not remote:
      raise
    raise ValueError(
        f"--workdir={workdir} cannot be written ({type(e).__name__}: "
        f"{str(e)[:300]}): check the bucket exists and this machine is "
        "authenticated for it (Colab: google.colab.auth.authenticate_user(); "
        "elsewhere: gcloud auth application-default login), and that gcsfs "
        "or TensorFlow is installed (pip install 'fer_jax[gcs]')") from None


# Fields a rerun may change without changing what its checkpoint means (how
# the run is executed, logged, checkpointed or evaluated). Every other field
# (method, data set, fold, classes, model, optimizer, seed, the method's own
# section) is the run's identity, fixed by the workdir's config.json: a
# checkpoint resumed or evaluated under another value would silently train
# or score something else.
HARMLESS_FIELDS = (
    "data.data_dir", "data.num_threads", "data.in_memory",
    "data.in_memory_max_gb", "data.device_resident", "data.device_memory_gb",
    "data.all_folds", "model.fast_layers", "train.eval_batch_size",
    "train.log_every", "train.checkpoint_every", "train.eval_every",
    "train.max_to_keep", "train.async_checkpoint", "train.progress_bar",
    "train.steps_per_dispatch", "train.nonfinite",
    "train.max_skipped_fraction", "train.skip_window", "train.select_by",
    "train.batch_folds")
# Harmless for evaluation; in training they may only grow (a longer run).
LENGTH_FIELDS = ("train.num_steps", "train.num_epochs")


def _flat(tree, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def reconcile(saved: dict, config, mode: str, source: str) -> list[str]:
  """Checks ``config`` against ``saved`` (the workdir's config.json, read
  from ``source``) for a resume (``mode='train'``) or an evaluation.

  Raises ValueError naming every identity field that differs, with both
  values; returns the harmless differences, one "field: old -> new" each.
  Fields one side lacks (a config.json older than the field) are skipped.
  """
  import json  # pylint: disable=import-outside-toplevel
  old = _flat(saved)
  new = _flat(json.loads(config.to_json_best_effort()))
  refused, allowed = [], []
  for key in sorted(old.keys() & new.keys()):
    a, b = old[key], new[key]
    if a == b:
      continue
    grows = (isinstance(a, (int, float)) and isinstance(b, (int, float))
             and b >= a)
    if key in HARMLESS_FIELDS or (key in LENGTH_FIELDS and
                                  (mode != "train" or grows)):
      allowed.append(f"{key}: {a!r} -> {b!r}")
    else:
      refused.append(f"config.{key} is {a!r} in {source} but {b!r} here")
  if refused:
    raise ValueError(
        f"the workdir's checkpoint was trained with another config: "
        f"{'; '.join(refused)}. Drop those overrides (--mode=eval and a "
        f"resume use the workdir's config), or use another --workdir")
  return allowed


def with_fold(config, fold: int):
  """One fold's config (its config.json): nothing left to batch over."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.fold = fold
    c.data.all_folds = False
    if "batch_folds" in c.train:
      c.train.batch_folds = False
  return c


def load_config_module(path: str):
  """Imports a config file by path (for one config file building on
  another), or a packaged config by name (``load_config_module("ifgan")``,
  see ``config_file``)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    path = config_file(path).partition(":")[0]
  spec = importlib.util.spec_from_file_location(
      "fer_jax_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# --------------------------------------------------------- config files

CONFIG_FLAG_FORMS = ("--config", "-config")


def configs_dir() -> str:
  """The folder of the method configs: the repository's ``configs/`` in a
  source checkout, ``fer_jax/configs/`` in an installed package."""
  import importlib  # pylint: disable=import-outside-toplevel
  package = importlib.import_module("fer_jax.configs")
  return os.path.dirname(os.path.abspath(package.__file__))


def packaged_configs() -> list[str]:
  """The method configs' names (``gndl``, ``ifgan``, ...)."""
  return sorted(f[:-3] for f in os.listdir(configs_dir())
                if f.endswith(".py") and not f.startswith("_"))


def config_file(spec: str, root: str | None = None) -> str:
  """A ``--config`` value (``path[:arg]``) with its path made one that exists.

  An existing file (relative to ``root``, default the working directory) is
  kept. Otherwise the path names a packaged config: ``gndl``, ``gndl.py``
  or ``configs/gndl.py`` (the repository-relative path the README uses)
  give ``configs_dir()/gndl.py``, so a config is found by name from any
  directory with only the installed package. ``:arg`` is kept as given.
  Raises ValueError naming the packaged configs when neither is found.
  """
  path, sep, arg = spec.partition(":")
  local = os.path.join(root, path) if root is not None else path
  if path and os.path.isfile(local):
    return local + sep + arg
  name = os.path.normpath(path) if path else ""
  if name.startswith("configs" + os.sep):
    name = name[len("configs") + 1:]
  name = name.removesuffix(".py")
  if name and os.sep not in name and not name.startswith(("_", ".")):
    packaged = os.path.join(configs_dir(), name + ".py")
    if os.path.isfile(packaged):
      return packaged + sep + arg
  raise ValueError(
      f"--config={spec}: no config file {local!r} and no packaged config "
      f"named {name or path!r}; packaged configs: "
      f"{', '.join(packaged_configs())} (e.g. --config=gndl or "
      "--config=gndl.py:ckplus)")


def resolve_config_flag(argv: list[str]) -> list[str]:
  """``argv`` with its ``--config`` value (``--config=V`` or ``--config V``)
  passed through ``config_file``, for ml_collections' config_flags, which
  only opens paths. ``--config.FIELD=...`` overrides are left alone."""
  out = list(argv)
  for i, a in enumerate(out):
    for form in CONFIG_FLAG_FORMS:
      if a.startswith(form + "="):
        out[i] = form + "=" + config_file(a[len(form) + 1:])
      elif a == form and i + 1 < len(out):
        out[i + 1] = config_file(out[i + 1])
  return out
