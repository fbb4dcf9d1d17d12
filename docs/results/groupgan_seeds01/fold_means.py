"""GroupGAN 2V2 - CNN per fold, averaged over the two training seeds, and a
Student's t 95% interval over the 4 folds (the seeds of one fold share its
test faces, so the 8 (fold, seed) pairs of compare.md are not independent).

  python docs/results/groupgan_seeds01/fold_means.py
"""
import json
import os

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = {0: os.path.join(HERE, "..", "runs"), 1: os.path.join(HERE, "runs")}


def accuracy(arm, fold, seed):
  path = os.path.join(RUNS[seed], "groupgan", arm, f"fold{fold}_seed{seed}",
                      "eval", "report.json")
  with open(path) as f:
    return 100.0 * json.load(f)["accuracy"]


diffs = []
for fold in range(4):
  d = [accuracy("groupgan", fold, s) - accuracy("cnn", fold, s) for s in (0, 1)]
  diffs.append(np.mean(d))
  print(f"fold {fold}: seed 0 {d[0]:+.2f}, seed 1 {d[1]:+.2f}, mean {diffs[-1]:+.2f}")
m, se = np.mean(diffs), stats.sem(diffs)
lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=m, scale=se)
print(f"mean over folds {m:+.2f}, 95% CI [{lo:+.2f}, {hi:+.2f}]")
