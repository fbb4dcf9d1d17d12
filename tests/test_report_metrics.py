"""report.json's class-balanced scores (mean class accuracy and macro-F1,
what RAF-DB and AffectNet papers report), against a hand computation."""

import numpy as np
import pytest

from fer_jax import evaluate

CLASSES = ["anger", "happiness", "sadness", "surprise"]
# Rows true, columns predicted. 12 faces: 6 anger, 6 happiness; sadness is
# never true but predicted once; surprise is neither.
CM = [[5, 1, 0, 0],
      [2, 3, 1, 0],
      [0, 0, 0, 0],
      [0, 0, 0, 0]]


def _labels_preds(cm):
  labels, preds = [], []
  for t, row in enumerate(cm):
    for p, n in enumerate(row):
      labels += [t] * n
      preds += [p] * n
  return np.array(labels), np.array(preds)


def test_class_metrics_by_hand():
  m = evaluate.class_metrics(CM)
  # recall: anger 5/6, happiness 3/6; the absent classes have none
  assert m["per_class_accuracy"] == pytest.approx([5 / 6, 1 / 2, None, None])
  assert m["per_class_accuracy"][2:] == [None, None]
  assert m["mean_class_accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)
  # F1 = 2TP / (2TP + FP + FN): anger 10 / (10 + 2 + 1), happiness
  # 6 / (6 + 1 + 3); sadness 0 / (0 + 1 + 0) = 0 (predicted, never true);
  # surprise undefined (neither), left out of the mean.
  assert m["per_class_f1"][:3] == pytest.approx([10 / 13, 6 / 10, 0.0])
  assert m["per_class_f1"][3] is None
  assert m["macro_f1"] == pytest.approx((10 / 13 + 6 / 10 + 0.0) / 3)
  assert m["macro_f1"] == pytest.approx(89 / 195)


def test_perfect_and_empty():
  perfect = evaluate.class_metrics(np.diag([3, 1, 2]))
  assert perfect["mean_class_accuracy"] == perfect["macro_f1"] == 1.0
  empty = evaluate.class_metrics(np.zeros((3, 3), int))
  assert empty["mean_class_accuracy"] is None and empty["macro_f1"] is None


def test_the_report_carries_them():
  labels, preds = _labels_preds(CM)
  r = evaluate.make_report(method="m", dataset="d", fold=0, split="test",
                           classes=CLASSES, labels=labels, preds=preds,
                           step=1, digest="x")
  assert r["confusion_matrix"] == CM
  assert r["accuracy"] == pytest.approx(8 / 12)
  assert r["mean_class_accuracy"] == pytest.approx(2 / 3)
  assert r["macro_f1"] == pytest.approx(89 / 195)
  assert r["per_class_accuracy"] == {"anger": pytest.approx(5 / 6),
                                     "happiness": 0.5, "sadness": None,
                                     "surprise": None}
  assert r["per_class_f1"]["sadness"] == 0.0
  assert r["per_class_f1"]["surprise"] is None


def test_cv_summary_per_fold_and_pooled():
  other = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
  reports = []
  for fold, cm in enumerate((CM, other)):
    labels, preds = _labels_preds(cm)
    reports.append(evaluate.make_report(
        method="m", dataset="d", fold=fold, split="test", classes=CLASSES,
        labels=labels, preds=preds, step=1, digest=str(fold)))
  reports[1]["nonfinite_steps"] = 3  # fold 1 skipped 3 non-finite steps
  s = evaluate.cv_summary(reports)
  assert [f["nonfinite_steps"] for f in s["folds"]] == [0, 3]
  assert s["nonfinite_steps"] == 3
  assert [f["macro_f1"] for f in s["folds"]] == pytest.approx([89 / 195, 1])
  assert s["mean_class_accuracy_mean"] == pytest.approx((2 / 3 + 1) / 2)
  assert s["macro_f1_mean"] == pytest.approx((89 / 195 + 1) / 2)
  assert s["macro_f1_std"] == pytest.approx(np.std([89 / 195, 1]))
  # pooled: [[7,1,0,0],[2,5,1,0],...]: recall 7/8, 5/8; F1 14/17, 10/14, 0
  assert s["pooled_mean_class_accuracy"] == pytest.approx((7 / 8 + 5 / 8) / 2)
  assert s["pooled_macro_f1"] == pytest.approx((14 / 17 + 10 / 14) / 3)
