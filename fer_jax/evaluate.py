"""Evaluation: predictions over a split, the report, and its pictures; and
``load``, a trained run as a Python object.

``report.json`` is the contract between runs: accuracy, per-class accuracy,
the confusion matrix and a digest of the parameters, so two runs (or a run and
its restored checkpoint) can be compared exactly.

  model = fer_jax.evaluate.load("workdirs/gndl")   # latest checkpoint
  model.predict(faces)          # uint8 (N, H, W, 3) -> class ids (N,)
  model.probabilities(faces)    # (N, K), classes in model.classes
  model.evaluate("test")        # the run's own report, recomputed
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from fer_jax import checkpoint as ckpt_lib
from fer_jax import files
from fer_jax import sharding
from fer_jax import viz
from fer_jax.data import pipeline
from fer_jax.data.protocols import Examples
from fer_jax.data.run_data import LoadData, RunData, prepare_data


def predict_examples(predict_fn, state, examples: Examples, batch_size: int,
                     mesh) -> np.ndarray:
  """Predicted class per example; ``predict_fn`` is the jitted method.predict."""
  preds = []
  for batch in pipeline.eval_batches(examples, batch_size):
    mask = batch.pop("mask")
    logits = predict_fn(state, sharding.to_global(batch, mesh))
    logits = np.asarray(multihost_utils.process_allgather(logits, tiled=True)
                        if jax.process_count() > 1 else jax.device_get(logits))
    keep = (np.asarray(multihost_utils.process_allgather(mask, tiled=True))
            if jax.process_count() > 1 else mask)
    preds.append(np.argmax(logits, -1)[keep])
  return np.concatenate(preds)


def noisy_label_fit(method, state, data: RunData, batch_size: int, mesh,
                    predict_fn) -> dict[str, Any] | None:
  """How the model treats its training labels under injected noise: of
  the flipped examples, the fraction it predicts as the noisy label
  (memorised) and as the true one; its accuracy on the others. A
  label-agnostic noise filter such as SNA's divergence mask (docs/methods.md,
  eq. 10-14) can only find flipped labels the network has memorised.
  None for a method without a one-example classifier."""
  ex = data.examples("train", method.eval_kind, data.config.data.role)
  if ex.clean_label is None:
    return None
  try:
    preds = predict_examples(predict_fn, state, ex, batch_size, mesh)
  except NotImplementedError:
    return None
  flipped = ex.label != ex.clean_label
  share = lambda hit: float(np.mean(hit)) if len(hit) else None  # noqa: E731
  return {"num_flipped": int(flipped.sum()),
          "flipped_predicted_as_noisy_label": share(
              preds[flipped] == ex.label[flipped]),
          "flipped_predicted_as_true_label": share(
              preds[flipped] == ex.clean_label[flipped]),
          "clean_accuracy": share(preds[~flipped] == ex.label[~flipped])}


def evaluate_examples(method, state, examples: Examples, *, predict_fn,
                      batch_size: int, mesh, out_dir: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """(labels, predictions, extra report fields): the method's own
  evaluation if it has one (``Method.evaluate_split``), else argmax of its
  predict over every example."""
  custom = method.evaluate_split(state, examples, out_dir)
  if custom is not None:
    return custom
  preds = predict_examples(predict_fn, state, examples, batch_size, mesh)
  return examples.label, preds, {}


def write_images(method, state, examples: Examples, batch_size: int, mesh,
                 out_dir: str, classes: Sequence[str] = (),
                 predict_fn=None) -> None:
  """The method's pictures on one batch spread evenly over ``examples`` (so
  the first rows show different subjects and classes), each face captioned
  with its true and predicted class."""
  n = batch_size
  order = np.argsort(examples.label, kind="stable")  # class by class
  picks = order[np.linspace(0, len(examples) - 1, n).round().astype(int)]
  # Interleave so the first rows already cover several classes.
  picks = np.concatenate([picks[i::8] for i in range(8)])[:n]
  batch = pipeline.gather(examples, picks[sharding.local_slice(n)])
  # Every process computes (the arrays are global); viz writes on process 0.
  batch = sharding.to_global(batch, mesh)
  caps: list[str] = []
  if classes:
    gather = ((lambda x: multihost_utils.process_allgather(x, tiled=True))
              if jax.process_count() > 1 else jax.device_get)
    try:
      logits = (predict_fn or jax.jit(method.predict))(state, batch)
      preds = np.argmax(np.asarray(gather(logits)), -1)
    except NotImplementedError:  # no classifier (cGAN+WSC): true class only
      preds = None
    labels = np.asarray(gather(batch["label"]))
    caps = viz.captions(classes, labels, preds)
  method.write_images(state, batch, out_dir, captions=caps)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray,
                     num_classes: int) -> np.ndarray:
  m = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(m, (labels, preds), 1)
  return m


def class_metrics(cm) -> dict[str, Any]:
  """The class-balanced scores RAF-DB and AffectNet papers report, from a
  confusion matrix (rows: true class, columns: predicted).

  ``per_class_accuracy``: recall TP / (TP + FN) per class, None for a
  class without examples. ``mean_class_accuracy``: their mean over the
  classes that have examples. ``per_class_f1``: 2 TP / (2 TP + FP + FN),
  None where a class is neither present nor predicted. ``macro_f1``: the
  mean of the defined F1s, so a class predicted but absent counts as 0
  (scikit-learn's ``f1_score(average="macro")`` over the labels seen in
  either truth or predictions).
  """
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  true = cm.sum(1)
  predicted = cm.sum(0)
  recall = [float(t / n) if n else None for t, n in zip(tp, true)]
  denom = true + predicted  # 2 TP + FP + FN
  f1 = [float(2 * t / d) if d else None for t, d in zip(tp, denom)]

  def mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None

  return {"per_class_accuracy": recall, "mean_class_accuracy": mean(recall),
          "per_class_f1": f1, "macro_f1": mean(f1)}


def make_report(*, method: str, dataset: str, fold: int, split: str,
                classes: Sequence[str], labels: np.ndarray, preds: np.ndarray,
                step: int, digest: str, **extra: Any) -> dict[str, Any]:
  cm = confusion_matrix(labels, preds, len(classes))
  scores = class_metrics(cm)
  return {
      "method": method, "dataset": dataset, "fold": int(fold), "split": split,
      "accuracy": float(np.mean(labels == preds)) if len(labels) else 0.0,
      "mean_class_accuracy": scores["mean_class_accuracy"],
      "macro_f1": scores["macro_f1"],
      "per_class_accuracy": dict(zip(classes, scores["per_class_accuracy"])),
      "per_class_f1": dict(zip(classes, scores["per_class_f1"])),
      "confusion_matrix": cm.tolist(), "classes": list(classes),
      "num_examples": len(labels), "step": int(step),
      "state_digest": digest, **extra,
  }


def build_report(method, loop, data: RunData, split: str, *, step: int,
                 batch_size: int, mesh, predict_fn=None,
                 out_dir: str | None = None,
                 selection: dict[str, Any] | None = None) -> dict[str, Any]:
  """The report of ``split`` of the fold's ``data`` for a method's loop
  state (training's evaluations, --mode=eval and ``Model.evaluate`` all
  come here); with ``out_dir``, also report.json, the confusion matrix and
  the method's pictures written there. ``selection``: fields added to it
  (which state was evaluated and why: train.select_by)."""
  ex = data.examples(split, method.eval_kind, data.config.data.role)
  labels, preds, extra = evaluate_examples(
      method, loop["model"], ex,
      predict_fn=predict_fn or jax.jit(method.predict),
      batch_size=batch_size, mesh=mesh, out_dir=out_dir)
  report = make_report(
      method=method.name, dataset=data.table.name,
      fold=data.config.data.fold, split=split, classes=data.classes,
      labels=labels, preds=preds, step=step,
      digest=ckpt_lib.state_digest(method.params_for_digest(loop["model"])),
      nonfinite_steps=int(jax.device_get(loop["guard"]["nonfinite"])))
  report.update(extra)
  report.update(data.report_fields())
  if split == "test" and data.label_noise:
    fit = noisy_label_fit(method, loop["model"], data, batch_size, mesh,
                          predict_fn or jax.jit(method.predict))
    if fit is not None:
      report["label_noise"]["fit_on_train"] = fit
  report.update(selection or {})
  if out_dir:
    write_report(report, out_dir)
    write_images(method, loop["model"], ex, batch_size, mesh, out_dir,
                 data.classes, predict_fn)
  return report


def write_report(report: dict[str, Any], out_dir: str) -> str:
  """Writes report.json and confusion_matrix.png; returns the json path."""
  if jax.process_index():
    return ""
  files.makedirs(out_dir)
  path = files.join(out_dir, "report.json")
  files.write_json_atomic(path, report)
  viz.save_confusion_matrix(
      files.join(out_dir, "confusion_matrix.png"),
      np.array(report["confusion_matrix"]), report["classes"],
      title=(f"{report['method']} on {report['dataset']} fold "
             f"{report['fold']} {report['split']}: "
             f"{100 * report['accuracy']:.1f}%"))
  return path


def cv_summary(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Mean/std accuracy, mean class accuracy and macro-F1 over folds (each
  fold's from its confusion matrix), the pooled confusion matrix with its
  own mean class accuracy and macro-F1, and the skipped steps per fold and
  in all."""
  acc = np.array([r["accuracy"] for r in reports])
  matrices = [np.array(r["confusion_matrix"]) for r in reports]
  pooled = np.sum(matrices, axis=0)
  per_fold = [class_metrics(m) for m in matrices]
  pooled_scores = class_metrics(pooled)
  out = {
      "method": reports[0]["method"], "dataset": reports[0]["dataset"],
      "split": reports[0]["split"], "classes": reports[0]["classes"],
      "folds": [{"fold": r["fold"], "accuracy": r["accuracy"],
                 "mean_class_accuracy": m["mean_class_accuracy"],
                 "macro_f1": m["macro_f1"],
                 "state_digest": r["state_digest"],
                 "nonfinite_steps": int(r.get("nonfinite_steps", 0))}
                for r, m in zip(reports, per_fold)],
      "mean_accuracy": float(acc.mean()), "std_accuracy": float(acc.std()),
      # Steps the non-finite guard skipped (train.nonfinite='skip'), over
      # folds: the closing summary warns of them as for one fold.
      "nonfinite_steps": int(sum(r.get("nonfinite_steps", 0)
                                 for r in reports)),
  }
  for key in ("mean_class_accuracy", "macro_f1"):
    values = np.array([m[key] for m in per_fold if m[key] is not None])
    out[f"{key}_mean"] = float(values.mean()) if len(values) else None
    out[f"{key}_std"] = float(values.std()) if len(values) else None
    out[f"pooled_{key}"] = pooled_scores[key]
  out["pooled_confusion_matrix"] = pooled.tolist()
  return out


# ------------------------------------------------------- a run from Python

def read_config(workdir: str):
  """The config a run saved in its workdir (``config.json``), validated:
  ValueError naming the file and the field when it was edited or damaged."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  path = files.join(workdir, "config.json")
  if not files.exists(path):
    folds = (sorted(n for n in files.listdir(workdir) if n.startswith("fold_"))
             if files.exists(workdir) else [])
    if folds:
      raise FileNotFoundError(
          f"{workdir} holds a cross-validation run: load one fold, e.g. "
          f"{files.join(workdir, folds[0])}")
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a workdir "
                            "written by python -m fer_jax.main?")
  try:
    config = ml_collections.ConfigDict(json.loads(files.read_text(path)))
    config_lib.validate(config, restoring=True)
  except (ValueError, TypeError, AttributeError, KeyError) as e:
    raise ValueError(f"{path} (the run's config) is not one fer_jax can "
                     f"use: {' '.join(str(e).split())}. Restore the file "
                     "the run wrote (or correct that field)") from None
  return config


class Model:
  """A restored run: its method, state and config (use ``load``).

  ``predict``/``logits``/``probabilities`` take uint8 faces (N, H, W, C) or
  one face (H, W, C), square, any size (they are resized and centre-cropped
  as in the run's evaluation), or a dict of the method's image slots (a
  method whose evaluation needs more than one image, e.g. cGAN+WSC's
  neutral face). Single-process.
  """

  def __init__(self, config, workdir: str, method, loop, meta, mesh,
               load_data: LoadData = prepare_data):
    from fer_jax.data import classes as classes_lib  # pylint: disable=import-outside-toplevel
    from fer_jax.data import protocols  # pylint: disable=import-outside-toplevel
    self.config = config
    self.workdir = workdir
    self.method = method
    self.loop = loop
    self.meta = meta
    self.mesh = mesh
    self.step = int(meta["global_step"])
    self.classes = classes_lib.resolve_class_set(config.data.classes)
    # The image slot an array passed to predict fills (GroupGAN: "weak").
    self.slot = protocols.EXAMPLE_KINDS[method.eval_kind][0]
    self._predict = jax.jit(method.predict)
    self._load_data = load_data
    self._data = None

  @property
  def eval_batch_size(self) -> int:
    """The run's eval batch, rounded up to a multiple of this mesh's
    devices (which may be more than the run's: the padded rows are masked,
    so the report is the same)."""
    bs = self.config.train.eval_batch_size
    return bs + -bs % self.mesh.devices.size

  @property
  def state(self):
    """The method's state pytree (every network's variables)."""
    return self.loop["model"]

  def _slots(self, images) -> dict[str, np.ndarray]:
    if not isinstance(images, dict):
      images = {self.slot: images}
    out = {}
    for k, v in images.items():
      v = np.asarray(v)
      if v.ndim == 3:
        v = v[None]
      if v.dtype != np.uint8 or v.ndim != 4 or v.shape[1] != v.shape[2]:
        raise ValueError(f"images[{k!r}]: expected square uint8 faces "
                         f"(N, H, W, C) in 0..255, got {v.dtype} "
                         f"{v.shape}")
      out[k] = v
    return out

  def require_classifier(self) -> None:
    """ValueError unless the method classifies one face on its own, as
    predicting from photos and exporting need: cGAN+WSC has no classifier,
    GNDL's oracle arm also needs the subject's neutral face. Traces the
    method's predict (jax.eval_shape), compiles nothing."""
    from fer_jax.data import protocols  # pylint: disable=import-outside-toplevel
    size = self.config.data.resize
    face = jax.ShapeDtypeStruct((1, size, size, 3), np.uint8)
    try:
      jax.eval_shape(self.method.predict, self.state, {self.slot: face})
    except NotImplementedError as e:
      raise ValueError(f"{self.workdir}: method {self.method.name!r} has no "
                       f"classifier ({e}); predicting a face's class needs "
                       "a method that has one (baseline, gndl, ifgan, "
                       "groupgan_*, sna)") from None
    except KeyError as e:
      raise ValueError(
          f"{self.workdir}: method {self.method.name!r} predicts from the "
          f"image slots {protocols.EXAMPLE_KINDS[self.method.eval_kind]} "
          f"(it needs {e.args[0]!r} too), not from one face; train it "
          "without that input (e.g. gndl with neutral_source=generated)"
          ) from None

  def logits(self, images) -> np.ndarray:
    """(N, K) float32 class logits."""
    slots = self._slots(images)
    n = len(next(iter(slots.values())))
    bs = self.eval_batch_size
    out = []
    for start in range(0, n, bs):
      chunk = {k: v[start:start + bs] for k, v in slots.items()}
      m = len(next(iter(chunk.values())))
      chunk = {k: np.concatenate([v, np.zeros((bs - m,) + v.shape[1:],
                                              v.dtype)])
               for k, v in chunk.items()}
      try:
        logits = self._predict(self.state, sharding.to_global(chunk,
                                                              self.mesh))
      except KeyError as e:
        from fer_jax.data import protocols  # pylint: disable=import-outside-toplevel
        raise ValueError(
            f"method {self.method.name!r} predicts from the slots "
            f"{protocols.EXAMPLE_KINDS[self.method.eval_kind]}; pass a dict "
            f"with {e.args[0]!r} too") from None
      out.append(np.asarray(jax.device_get(logits))[:m])
    return np.concatenate(out).astype(np.float32)

  def probabilities(self, images) -> np.ndarray:
    """(N, K) softmax of the logits; columns in ``self.classes`` order."""
    return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))

  def predict(self, images) -> np.ndarray:
    """(N,) class ids, indices into ``self.classes``."""
    return np.argmax(self.logits(images), axis=-1)

  @property
  def data(self) -> RunData:
    """The run's data (its fold of its data set), read on first use."""
    if self._data is None:
      data_dir = self.config.data.get("data_dir", "")
      if (self._load_data is prepare_data and data_dir and "://" not in
          data_dir and not os.path.isdir(os.path.expanduser(data_dir))):
        # Never build a data set into a folder the run did not read from.
        raise ValueError(
            f"config.data.data_dir={data_dir!r} in "
            f"{files.join(self.workdir, 'config.json')} is not a "
            "directory: load(workdir, data_dir=DIR) reads the run's data "
            "set from DIR (where it was built)")
      self._data = self._load_data(self.config)
    return self._data

  def examples(self, split: str = "test") -> Examples:
    """The examples the run evaluates on ``split`` (test, val or train)."""
    return self.data.examples(split, self.method.eval_kind,
                              self.config.data.role)

  def evaluate(self, split: str = "test", out_dir: str | None = None
               ) -> dict[str, Any]:
    """The report of ``split`` as the run computes it (same examples,
    batches and digest); with ``out_dir``, also report.json, the confusion
    matrix and the method's image grids written there."""
    return build_report(self.method, self.loop, self.data, split,
                        step=self.step, batch_size=self.eval_batch_size,
                        mesh=self.mesh, predict_fn=self._predict,
                        out_dir=out_dir)


def load(workdir: str, step: int | None = None, mesh=None,
         load_data: LoadData = prepare_data,
         data_dir: str | None = None) -> Model:
  """A trained run from its workdir (local or gs://): the config it saved,
  the checkpoint at ``step`` (default: the latest, or the best by
  validation when the run has train.select_by='val'), the method rebuilt.
  Needs no data set until ``Model.evaluate``, which gets the fold's data
  from ``load_data(config)`` (``data_dir``: where the data set is, in place
  of the run's config.data.data_dir)."""
  from fer_jax.data import classes as classes_lib  # pylint: disable=import-outside-toplevel
  from fer_jax.registry import method_class  # pylint: disable=import-outside-toplevel
  config = read_config(workdir)
  if data_dir is not None:
    config.data.data_dir = data_dir
  mesh = mesh or sharding.make_mesh()
  # A run that selects by validation is used at its best state, as its
  # final test evaluation and --mode=eval use it.
  best = (step is None and config.train.get("select_by", "last") == "val"
          and ckpt_lib.has_checkpoint(workdir, ckpt_lib.BEST))
  ckpt = ckpt_lib.Checkpointer(
      workdir, async_save=False,
      subdir=ckpt_lib.BEST if best else "checkpoints")
  try:
    loop, meta = ckpt.restore_as_saved(sharding.replicated(mesh), step,
                                       hint="step")
  finally:
    ckpt.close()
  if meta.get("method") != config.method:
    raise ckpt_lib.CheckpointError(
        f"{workdir}: checkpoint written by method {meta.get('method')!r}, "
        f"config.json says {config.method!r}")
  num_classes = len(classes_lib.resolve_class_set(config.data.classes))
  # Step counts only shape the optimizer's schedule, which predicting
  # never runs: the method is built without reading the data set.
  method = method_class(config.method)(
      config, num_classes=num_classes,
      count_examples=lambda kind, role: config.train.batch_size)
  return Model(config, workdir, method, loop, meta, mesh, load_data)
