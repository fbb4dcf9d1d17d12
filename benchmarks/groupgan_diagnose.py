"""Diagnosis of a trained GroupGAN run (issue 16): where the real peak's
change sits, where G's sits, whether G's change codes the class as a tint,
what C's true-class logit responds to, and the scale of G's loss terms.

  python benchmarks/groupgan_diagnose.py WORKDIR [NUM_TEST]

WORKDIR is a trained GroupGAN run (one fold); prints one JSON object. The
"region" is the pixels within RADIUS px of the landmarks fer_synth's
expressions move, from the weak and the peak frame (diagnosis only: no
method reads landmarks). README.md's GroupGAN section quotes its output.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import evaluate, losses
from fer_jax.data import augment, pipeline
from fer_jax.methods import groupgan

# Landmarks that expressions move in fer_synth: brows, eyes, nose base,
# mouth, and the lower jaw (AU26 drops the chin).
PARTS = np.r_[17:27, 36:48, 31:36, 48:68, 4:13]
RADIUS = 3.0  # px of the 64 px view


def region_mask(lm_weak, lm_peak, spec, src, size):
  pts = np.concatenate([lm_weak[:, PARTS], lm_peak[:, PARTS]], 1)
  pts = np.asarray(augment.view_points(spec, pts, src)) * size  # (B, P, 2)
  u = np.arange(size) + 0.5
  yy, xx = np.meshgrid(u, u, indexing="ij")
  d2 = ((xx[None, None] - pts[..., 0, None, None]) ** 2
        + (yy[None, None] - pts[..., 1, None, None]) ** 2)
  return d2.min(1) <= RADIUS ** 2  # (B, H, W)


def pearson(a, b):
  a = a.reshape(len(a), -1)
  b = b.reshape(len(b), -1)
  a = a - a.mean(1, keepdims=True)
  b = b - b.mean(1, keepdims=True)
  return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-30)


def loo_nearest_centroid(x, y):
  """Leave-one-out nearest-class-mean accuracy on standardised features."""
  x = (x - x.mean(0)) / (x.std(0) + 1e-12)
  hits = 0
  for i in range(len(x)):
    keep = np.arange(len(x)) != i
    cents = {k: x[keep & (y == k)].mean(0) for k in np.unique(y[keep])}
    ks = list(cents)
    d = [np.sum((x[i] - cents[k]) ** 2) for k in ks]
    hits += ks[int(np.argmin(d))] == y[i]
  return hits / len(x)


def main(workdir, n=360):
  model = evaluate.load(workdir)
  m, state = model.method, model.state
  ex = model.examples("test")
  n = min(n, len(ex))
  idx = np.arange(n)
  batch = pipeline.gather(ex, idx, with_landmarks=True)
  labels = batch["label"]
  src = batch["weak"].shape[1]
  weak = np.asarray(m.eval_view(batch, "weak"))
  peak = np.asarray(m.eval_view(batch, "peak"))
  magnify = jax.jit(m._magnify_with_mask)  # pylint: disable=protected-access
  fakes, masks = [], []
  for s in range(0, n, 60):
    f, a = magnify(state, jnp.asarray(weak[s:s + 60]))
    fakes.append(np.asarray(f))
    masks.append(None if a is None else np.asarray(a))
  fake = np.concatenate(fakes)
  size = weak.shape[1]
  region = region_mask(batch["weak_landmarks"], batch["peak_landmarks"],
                       m.spec, src, size)
  out = {"workdir": workdir, "num_test": n,
         "region": f"within {RADIUS} px of brow, eye, nose-base, mouth and "
                   "lower-jaw landmarks (weak or peak frame)",
         "region_area_fraction": float(region.mean())}
  for name, other in (("peak", peak), ("g", fake)):
    diff = other - weak
    h = np.sum(diff ** 2, -1)
    tot = h.reshape(n, -1).sum(1)
    inside = (h * region).reshape(n, -1).sum(1)
    tint = diff.reshape(n, -1, 3).mean(1)  # per-channel mean change
    rms = np.sqrt((diff ** 2).reshape(n, -1).mean(1))
    # Class means of the change: how much of it is common to a class.
    pooled = diff.reshape(n, 8, size // 8, 8, size // 8, 3).mean((2, 4))
    out[name] = {
        "mean_change_energy_per_pixel": float(h.mean()),
        "energy_fraction_in_region": float(np.median(inside / np.maximum(
            tot, 1e-30))),
        "energy_per_pixel_in_over_out": float(
            (inside.sum() / region.sum())
            / ((tot - inside).sum() / (~region).sum())),
        "tint_over_rms": float(np.median(np.linalg.norm(tint, axis=1)
                                         / np.sqrt(3) / rms)),
        "class_from_tint_loo_acc": float(loo_nearest_centroid(tint, labels)),
        "class_from_pooled8x8_change_loo_acc": float(
            loo_nearest_centroid(pooled.reshape(n, -1), labels)),
    }
  out["change_map_r"] = float(np.nanmean(np.asarray(
      groupgan.change_map_correlation(weak, fake, peak))))
  if masks[0] is not None:
    a = np.concatenate(masks)
    out["mask_mean"] = float(a.mean())
    out["mask_mean_in_region"] = float(a[region].mean())
    out["mask_mean_out_region"] = float(a[~region].mean())
    out["mask_r_with_peak_change"] = float(np.mean(pearson(
        a, np.sum((peak - weak) ** 2, -1))))

  # C's saliency: gradient of C's true-class logit w.r.t. its input.
  def true_logit(x, y):
    logits, _, _ = m._classify(state["c"], x, train=False)
    return jnp.sum(jnp.take_along_axis(logits, y[:, None], 1))
  grad = jax.jit(jax.grad(true_logit))
  hp = np.sum((peak - weak) ** 2, -1)
  for name, x in (("at_g_weak", fake), ("at_weak", weak), ("at_peak", peak)):
    g = np.concatenate([np.asarray(grad(jnp.asarray(x[s:s + 60]),
                                        jnp.asarray(labels[s:s + 60])))
                        for s in range(0, n, 60)])
    sal = np.sum(g ** 2, -1)
    tot = sal.reshape(n, -1).sum(1)
    inside = (sal * region).reshape(n, -1).sum(1)
    # The uniform part of the gradient: what a tint of the whole face
    # feeds the logit, relative to the gradient's norm.
    gmean = g.reshape(n, -1, 3).mean(1)
    out[f"c_saliency_{name}"] = {
        "energy_fraction_in_region": float(np.median(inside / tot)),
        "r_with_peak_change_map": float(np.mean(pearson(sal, hp))),
        "uniform_part": float(np.median(
            np.linalg.norm(gmean, axis=1) * np.sqrt(size * size)
            / np.linalg.norm(g.reshape(n, -1), axis=1))),
    }

  # Scale of G's loss terms at the trained state (eval-mode C).
  def ce(x, y):
    logits, _, _ = m._classify(state["c"], x, train=False)
    return losses.cross_entropy(logits, y)
  xs, ys, ps = (jnp.asarray(fake[:64]), jnp.asarray(labels[:64]),
                jnp.asarray(peak[:64]))
  ce_v, ce_g = jax.value_and_grad(ce)(xs, ys)
  cont_v, cont_g = jax.value_and_grad(
      lambda x: groupgan.mse_loss(x, ps, m.cfg.content_reduction))(xs)
  out["g_loss_terms_at_g_weak"] = {
      "content": float(cont_v), "ce_fake": float(ce_v),
      "content_weak_to_peak_mean": float(np.mean((weak - peak) ** 2)),
      "grad_norm_content": float(jnp.linalg.norm(cont_g)),
      "grad_norm_ce": float(jnp.linalg.norm(ce_g)),
      "grad_cosine_content_ce": float(jnp.vdot(cont_g, ce_g) / (
          jnp.linalg.norm(cont_g) * jnp.linalg.norm(ce_g)))}
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
