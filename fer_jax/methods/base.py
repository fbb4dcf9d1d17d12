"""The Method protocol: what ``train.py`` knows about a paper's method.

A method owns its networks and optimizers (static: built from the config) and
exposes pure functions over one state pytree: ``init_state``, the ``step`` of
each :class:`Phase`, and ``predict``. State is plain nested dicts of arrays
(params, batch statistics, optimizer states of every network), so Orbax
saves and restores it bit for bit and ``jax.jit`` shards it without help.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fer_jax.data import augment as augment_lib
from fer_jax.data import pipeline
from fer_jax.models import io as params_io
from fer_jax.optim import make_optimizer

State = dict[str, Any]
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[State, Batch, jax.Array], tuple[State, Metrics]]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"config.model.dtype={name!r}; choose one of "
                     f"{', '.join(DTYPES)}")
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class Phase:
  """One stage of a method's training (pre-training, main run, refinement).

  ``example_kind`` and ``role`` say which examples feed it (see
  ``fer_jax.data.protocols``); ``step(state, batch, rng)`` is one iteration of
  the paper's algorithm for this stage and is jitted once by the trainer.
  """
  name: str
  num_steps: int
  batch_size: int
  step: StepFn
  example_kind: str = "single"
  role: str = "peak"
  # Applied once (jitted) to the state when the phase starts, not on a resume
  # inside it: hand-over between stages (GroupGAN's C from the pre-trained E).
  enter: Callable[[State], State] | None = None
  # Batches also carry "<slot>_landmarks" (N, 68, 2) source-pixel coordinates.
  with_landmarks: bool = False
  # Order of training examples (``fer_jax.data.pipeline.SAMPLERS``):
  # shuffled epochs, or class_balanced batches (SNA's selective learning:
  # equal counts of every class in each batch).
  sampler: str = "shuffle"


class Method(abc.ABC):
  """Base of every method; subclasses set ``name`` and the four functions."""

  name: ClassVar[str]
  # Examples evaluation runs on: the examined image alone for every method.
  eval_kind: ClassVar[str] = "single"

  def __init__(self, config, *, num_classes: int,
               count_examples: Callable[[str, str], int]):
    """``count_examples(kind, role)``: training examples a phase would see."""
    self.config = config
    self.num_classes = num_classes
    self.count_examples = count_examples
    self.dtype = compute_dtype(config.model.dtype)
    # Every network's fast-layer choice (a model field, so jit sees it);
    # .get: a config.json saved before the field existed ran them.
    self.fast_layers = bool(config.model.get("fast_layers", True))
    self.spec = augment_lib.AugmentSpec.from_config(config.data)

  def eval_view(self, batch: Batch, slot: str = "image") -> jax.Array:
    """A batch slot as the networks see it at test time: resized, centre
    cropped, in [-1, 1], no randomness."""
    (x,) = augment_lib.augment_slots(self.spec, jax.random.key(0), batch,
                                     (slot,), train=False)
    return x

  @abc.abstractmethod
  def init_state(self, rng: jax.Array, batch: Batch) -> State:
    """Every network's variables and optimizer state, from an example batch."""

  @abc.abstractmethod
  def phases(self) -> list[Phase]:
    """The ordered stages of training."""

  @abc.abstractmethod
  def predict(self, state: State, batch: Batch) -> jax.Array:
    """Class logits (B, num_classes) for a uint8 evaluation batch."""

  def total_steps(self) -> int:
    return sum(p.num_steps for p in self.phases())

  def plan_single_phase(self, kind: str) -> None:
    """For a method with one phase over ``kind`` examples of
    ``config.data.role``: sets batch_size, role, num_steps and the optimizer
    tx (its schedule counted in that phase's epochs)."""
    self.batch_size = self.config.train.batch_size
    self.role = self.config.data.role
    self.num_steps = self.phase_steps(self.config.train, self.batch_size,
                                      kind, self.role)
    self.tx = make_optimizer(
        self.config.optim,
        self.steps_per_epoch(self.batch_size, kind, self.role),
        self.num_steps)

  def steps_per_epoch(self, batch_size: int, kind: str = "single",
                      role: str = "peak") -> int:
    return max(1, self.count_examples(kind, role) // batch_size)

  def phase_steps(self, train_cfg, batch_size: int, kind: str = "single",
                  role: str = "peak") -> int:
    """``train_cfg.num_steps`` if set (> 0), else ``num_epochs`` epochs."""
    if train_cfg.get("num_steps", 0):
      return int(train_cfg.num_steps)
    return max(1, int(round(train_cfg.num_epochs *
                            self.steps_per_epoch(batch_size, kind, role))))

  def prepare(self, data: Any, workdir: str) -> None:
    """Host-side work on the fold's training data before ``init_state``
    (IF-GAN's class-average targets). ``data`` is the fold's
    ``fer_jax.data.run_data.RunData``."""

  def load_pretrained(self, state: State) -> State:
    """Host-side: replace initial params with pretrained ones named by the
    config (``config.init_from``: ImageNet weights), after the jitted init.
    Methods with an ImageNet backbone override this with
    ``fit_pretrained``; the others refuse the field rather than ignore it."""
    if self.config.get("init_from", ""):
      raise ValueError(f"config.init_from: method {self.name!r} has no "
                       "ImageNet backbone to start from it")
    return state

  def pretrained_weights(self) -> dict[str, Any] | None:
    """The ``config.init_from`` file (checked against config.model.arch),
    or None when the field is empty."""
    path = self.config.get("init_from", "")
    if not path:
      return None
    loaded = params_io.load_pretrained(path)
    arch = self.config.model.arch
    if loaded["arch"] is not None and loaded["arch"] != arch:
      raise ValueError(f"config.init_from: {path} holds {loaded['arch']} "
                       f"weights, but config.model.arch is {arch!r}")
    return loaded

  def fit_pretrained(self, net: State, loaded: dict[str, Any],
                     params_path: tuple[str, ...],
                     stats_path: tuple[str, ...], where: str,
                     keep_mismatched_dense: bool = False,
                     tx: optax.GradientTransformation | None = None
                     ) -> State:
    """``net`` ({'params', 'batch_stats', 'opt_state'}) with the subtrees at
    ``params_path`` / ``stats_path`` taken from ``loaded`` (see
    ``params_io.load_into``) and a fresh optimizer state (of ``tx``,
    default ``self.tx``: methods with one optimizer per network pass
    theirs); prints what loaded, what was widened and what stayed at
    init."""
    source = f"config.init_from={self.config.init_from}"
    target = {"params": _get(net, params_path),
              "batch_stats": _get(net, stats_path)}
    try:
      fitted, report = params_io.load_into(
          jax.device_get(target), loaded, source, keep_mismatched_dense)
    except ValueError as e:
      m = self.config.model
      raise ValueError(f"{e} (the model: {m.arch} at config.model."
                       f"base_width={m.base_width}; torchvision's width is "
                       "64)") from None
    net = _set(net, params_path, fitted["params"])
    net = _set(net, stats_path, fitted["batch_stats"])
    net["opt_state"] = (tx or self.tx).init(net["params"])
    if jax.process_index() == 0:
      print(f"fer_jax: {where} from {self.config.init_from}: "
            f"{report.summary()}", flush=True)
    return net

  def prepare_for_benchmark(self, image_shape: tuple[int, ...]) -> None:
    """Stand-in for ``prepare`` when timing steps on random data."""

  def write_images(self, state: State, batch: Batch, out_dir: str,
                   captions: Sequence[str] = ()) -> None:
    """Pictures of the method at an evaluation (generated faces, attention,
    heat maps) from a fixed evaluation batch, each face labelled with its
    ``captions`` entry (true and predicted class). Classifiers have none."""

  def evaluate_split(self, state: State, examples: Any, out_dir: str | None
                     ) -> tuple[Any, Any, dict[str, Any]] | None:
    """Evaluation that is not argmax(predict): (true labels, predicted
    labels, extra report fields), or None for the usual path. cGAN+WSC's
    re-annotation of noisy labels; ``out_dir`` receives its plots."""
    return None

  def eval_outputs(self, fn: Callable[[State, Batch], Any], state: State,
                   examples: Any, with_landmarks: bool = False
                   ) -> tuple[np.ndarray, ...]:
    """``fn(state, batch)``'s outputs (a tuple of per-example arrays) over
    every example of ``examples``, in batches of train.eval_batch_size,
    each output concatenated with the last batch's padding dropped: what
    an ``evaluate_split`` that is more than argmax(predict) maps over."""
    cols = None
    for batch in pipeline.eval_batches(
        examples, self.config.train.eval_batch_size, with_landmarks):
      keep = batch.pop("mask")
      outs = jax.device_get(fn(state, batch))
      if cols is None:
        cols = [[] for _ in outs]
      for col, arr in zip(cols, outs):
        col.append(np.asarray(arr)[keep])
    return tuple(np.concatenate(c) for c in cols)

  def params_for_digest(self, state: State) -> Any:
    """The part of the state that ``state_digest`` hashes: every variable,
    no optimizer state (at any depth)."""
    def strip(tree):
      if isinstance(tree, dict):
        return {k: strip(v) for k, v in tree.items()
                if not k.endswith("opt_state")}
      return tree
    return strip(state)


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  """A copy of nested dicts ``tree`` with ``value`` at ``path``."""
  if not path:
    return value
  return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}
