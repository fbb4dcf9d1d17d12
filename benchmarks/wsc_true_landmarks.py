"""cGAN+WSC's clustering on a fold's own landmarks: no training.

  python benchmarks/wsc_true_landmarks.py --synth_seed=1 --fold=0

The data set's landmarks on each test face and on its sequence's real
neutral frame (perfect landmarking and neutral faces: the `true_landmarks`
arm of a cgan_wsc run's report) through the default config's re-annotation,
for every feature set (clustering.FEATURE_KINDS) and WSE form
(clustering.FORMS), then the classifier task (a linear classifier on
re-annotated vs noisy labels, held-out subjects: the compare's `wsc`
claim). Separates the clustering from the landmark regressor and the cGAN.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from fer_jax import clustering as wsc
from fer_jax import config_lib, train
from fer_jax.data import augment as augment_lib
from fer_jax.data import run_data


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/cgan_wsc.py")
  p.add_argument("--synth_seed", type=int, default=1,
                 help="1: the development population (tune here, not on 0)")
  p.add_argument("--fold", type=int, default=0)
  args = p.parse_args(argv)
  c = config_lib.load_config_module(args.config).get_config("")
  c.data.synth.seed = args.synth_seed
  c.data.fold = args.fold
  data = run_data.prepare_data(c)
  m = train.build_method(c, data)
  ex = data.examples("test", m.eval_kind, c.data.role)

  def points(_, batch):
    src = batch["image"].shape[1]
    return (augment_lib.view_points(m.spec, batch["image_landmarks"], src),
            augment_lib.view_points(m.spec, batch["neutral_landmarks"], src))

  face, neutral = (np.asarray(a) for a in m.eval_outputs(
      jax.jit(points), None, ex, with_landmarks=True))
  labels = ex.label.astype(np.int64)
  k = m.num_classes
  noisy = np.asarray(wsc.flip_labels(labels, c.cgan_wsc.label_noise, k,
                                     c.seed)[0], np.int64)
  print(f"N={len(labels)} noisy labels {np.mean(noisy == labels):.3f}")
  t0 = time.time()
  for kind in wsc.FEATURE_KINDS:
    for form in wsc.FORMS:
      r = m.reannotate(face, neutral, labels, noisy, k, "wse", kind=kind,
                       form=form)
      curve = {p["num_clusters"]: round(p["accuracy"], 3) for p in r["curve"]}
      print(f"re-annotation {kind:12s} {form:10s} {r['accuracy']:.3f} "
            f"({r['num_clusters']} clusters; by count {json.dumps(curve)}) "
            f"[{time.time() - t0:.0f} s]", flush=True)
  for kind in wsc.FEATURE_KINDS:
    m.cfg.features = kind
    cl = m._classifier_task(face, neutral, labels, noisy, ex.subjects, k)
    print(f"classifier {kind:12s} re-annotated labels "
          f"{cl['reannotated']['accuracy']:.3f}, noisy labels "
          f"{cl['noisy']['accuracy']:.3f} (halves re-annotated "
          f"{', '.join(f'{a:.3f}' for a in cl['halves_reannotation_accuracy'])}"
          ")", flush=True)


if __name__ == "__main__":
  main()
