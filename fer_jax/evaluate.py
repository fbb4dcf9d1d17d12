"""Evaluation: predictions over a split, the report, and its pictures.

``report.json`` is the contract between runs: accuracy, per-class accuracy,
the confusion matrix and a digest of the parameters, so two runs (or a run and
its restored checkpoint) can be compared exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from fer_jax import sharding
from fer_jax.data import pipeline
from fer_jax.data.protocols import Examples


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


def confusion_matrix(labels: np.ndarray, preds: np.ndarray,
                     num_classes: int) -> np.ndarray:
  m = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(m, (labels, preds), 1)
  return m


def make_report(*, method: str, dataset: str, fold: int, split: str,
                classes: Sequence[str], labels: np.ndarray, preds: np.ndarray,
                step: int, digest: str, **extra: Any) -> dict[str, Any]:
  cm = confusion_matrix(labels, preds, len(classes))
  per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
               for i, c in enumerate(classes)}
  return {
      "method": method, "dataset": dataset, "fold": int(fold), "split": split,
      "accuracy": float(np.mean(labels == preds)) if len(labels) else 0.0,
      "per_class_accuracy": per_class,
      "confusion_matrix": cm.tolist(), "classes": list(classes),
      "num_examples": int(len(labels)), "step": int(step),
      "state_digest": digest, **extra,
  }


def write_report(report: dict[str, Any], out_dir: str) -> str:
  """Writes report.json and confusion_matrix.png; returns the json path."""
  from fer_jax import viz  # pylint: disable=import-outside-toplevel
  if jax.process_index():
    return ""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "report.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  viz.save_confusion_matrix(
      os.path.join(out_dir, "confusion_matrix.png"),
      np.array(report["confusion_matrix"]), report["classes"],
      title=(f"{report['method']} on {report['dataset']} fold "
             f"{report['fold']} {report['split']}: "
             f"{100 * report['accuracy']:.1f}%"))
  return path


def cv_summary(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Mean/std accuracy over folds and the pooled confusion matrix."""
  acc = np.array([r["accuracy"] for r in reports])
  pooled = np.sum([np.array(r["confusion_matrix"]) for r in reports], axis=0)
  return {
      "method": reports[0]["method"], "dataset": reports[0]["dataset"],
      "split": reports[0]["split"], "classes": reports[0]["classes"],
      "folds": [{"fold": r["fold"], "accuracy": r["accuracy"],
                 "state_digest": r["state_digest"]} for r in reports],
      "mean_accuracy": float(acc.mean()), "std_accuracy": float(acc.std()),
      "pooled_confusion_matrix": pooled.tolist(),
  }
