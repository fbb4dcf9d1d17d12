"""cGAN neutral faces + geometric features + weakly supervised clustering.

Chen et al. 2024, "Conditional Generative Adversarial Net based Feature
Extraction along with Scalable Weakly Supervised Clustering for Facial
Expression Classification"; docs/methods.md section 5. Two trained phases:

- "cgan": pix2pix (U-Net of 6 down / 6 up with dropout, PatchGAN on the
  (expression, neutral) tuple) maps an expression image (one of its
  sequence's last ``peak_frames`` frames) to the neutral first frame of the
  same sequence, L = cGAN (eq. 1-2) + ``l1_weight`` (100) x L1 (eq. 3).
- "landmarks": a ResNet regresses the 68 iBUG points (the paper's AAM).

Then evaluation is the paper's experiment on the held-out split: its labels
are flipped at ``label_noise``; landmarks of each face and of its generated
neutral give F(expr) - F(neutral) (eq. 4-13), weighted by gain ratio on the
noisy labels (eq. 14-18); the weakly supervised spectral embedding (eq. 19)
with the noisy labels as weak labels, a rank-order graph, agglomerative
clustering, the cluster count of maximum modularity (eq. 20) and a majority
vote re-annotate. ``accuracy`` is the re-annotated labels' accuracy against
the true ones; the report adds the noisy labels' accuracy, the accuracy and
modularity of every candidate count (fig. 8), the binary positive/negative
task, and the PCA and "not optimised" feature baselines.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import clustering as wsc
from fer_jax import losses, nets, viz
from fer_jax.clustering import linear, reannotate
from fer_jax.data import augment as augment_lib
from fer_jax.data import classes as classes_lib
from fer_jax.methods import base
from fer_jax.models.landmarks import LandmarkNet, normalised_mean_error
from fer_jax.models.patchgan import PatchGAN
from fer_jax.models.unet import UNet
from fer_jax.optim import make_optimizer

FEATURE_SETS = ("cgan", "not_optimised", "pca")
# What a run's accuracy scores (cgan_wsc.score): the re-annotated labels
# of the split, or a linear classifier's held-out predictions, trained on
# re-annotated or on noisy labels (both are in every report's
# `classifier` block, which the compare's `wsc` claim reads).
SCORES = ("reannotation", "classifier_reannotated", "classifier_noisy")


class CGANWSC(base.Method):
  name = "cgan_wsc"
  # Evaluated faces come with their sequence's real neutral frame: shown
  # beside the generated one, and its landmarks give the "true_landmarks"
  # upper bound of the features.
  eval_kind = "neutral_pair"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    c = self.cfg = config.cgan_wsc
    for field, value, choices in (
        ("features", c.features, wsc.FEATURE_KINDS),
        ("form", c.form, wsc.FORMS), ("score", c.score, SCORES),
        ("vote", c.vote, reannotate.VOTES),
        ("wse_init", c.wse_init, reannotate.INITS)):
      if value not in choices:
        raise ValueError(f"config.cgan_wsc.{field}={value!r}; choose one of "
                         f"{', '.join(choices)}")
    self.g = UNet(depth=c.unet_depth, base_features=c.unet_features,
                  max_features=c.unet_max_features,
                  num_dropout=c.unet_dropout_layers,
                  out_channels=self.spec.channels, dtype=self.dtype,
                  fast_layers=self.fast_layers)
    self.d = PatchGAN(base_features=c.d_features, num_layers=c.d_layers,
                      dtype=self.dtype, fast_layers=self.fast_layers)
    self.lm = LandmarkNet(config.model.arch, config.model.base_width,
                          head=c.landmark_head, dtype=self.dtype,
                          fast_layers=self.fast_layers)
    self.batch_size = config.train.batch_size
    role = config.data.role
    self.cgan_steps = self._steps(c.cgan_steps, c.cgan_epochs,
                                  "neutral_pair", role)
    self.landmark_steps = self._steps(c.landmark_steps, c.landmark_epochs,
                                      "single", "all")
    self.tx = make_optimizer(
        config.optim, self.steps_per_epoch(self.batch_size, "neutral_pair",
                                           role), self.cgan_steps)
    self.lm_tx = make_optimizer(
        config.optim, self.steps_per_epoch(self.batch_size, "single", "all"),
        self.landmark_steps)
    self._features = jax.jit(self._feature_arrays)

  def _steps(self, steps, epochs, kind, role):
    if steps:
      return int(steps)
    return max(1, int(round(epochs * self.steps_per_epoch(self.batch_size,
                                                          kind, role))))

  # -- state and phases
  def init_state(self, rng, batch):
    kg, kd, kl = jax.random.split(rng, 3)
    s, ch = self.spec.crop, self.spec.channels
    img = jnp.zeros((1, s, s, ch), jnp.float32)
    pair = jnp.concatenate([img, img], -1)
    return {"g": nets.network_state(self.g.init(kg, img, train=False),
                                    self.tx),
            "d": nets.network_state(self.d.init(kd, pair, train=False),
                                    self.tx),
            "lm": nets.network_state(self.lm.init(kl, img, train=False),
                                     self.lm_tx)}

  def phases(self):
    return [
        base.Phase("cgan", self.cgan_steps, self.batch_size, self.cgan_step,
                   example_kind="neutral_pair", role=self.config.data.role),
        base.Phase("landmarks", self.landmark_steps, self.batch_size,
                   self.landmark_step, example_kind="single", role="all",
                   with_landmarks=True),
    ]

  def predict(self, state, batch):
    raise NotImplementedError(
        "cgan_wsc has no classifier: its evaluation re-annotates noisy labels "
        "(Method.evaluate_split)")

  # -- phase steps
  def cgan_step(self, state, batch, rng):
    """pix2pix: D on real vs generated tuples, then G (adversarial + L1)."""
    k_aug, k_drop = jax.random.split(rng)
    x, y = augment_lib.augment_slots(self.spec, k_aug, batch,
                                     ("image", "neutral"), train=True)
    g, d = state["g"], state["d"]

    def g_forward(params):
      out, upd = self.g.apply({"params": params,
                               "batch_stats": g["batch_stats"]}, x,
                              train=True, rngs={"dropout": k_drop},
                              mutable=["batch_stats"])
      return out, upd["batch_stats"]
    fake, g_vjp, g_stats = jax.vjp(g_forward, g["params"], has_aux=True)

    def d_apply(params, stats, other):
      logits, upd = self.d.apply({"params": params, "batch_stats": stats},
                                 jnp.concatenate([x, other], -1), train=True,
                                 mutable=["batch_stats"])
      return logits, upd["batch_stats"]

    def d_loss_fn(params):
      fake_logits, stats = d_apply(params, d["batch_stats"],
                                   jax.lax.stop_gradient(fake))
      real_logits, stats = d_apply(params, stats, y)
      # pix2pix halves D's loss to slow it relative to G.
      return 0.5 * losses.gan_discriminator_loss(real_logits,
                                                 fake_logits), stats
    (d_loss, d_stats), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(d["params"])
    d = nets.update(d, self.tx, d_grads)
    d_params = d["params"]

    def g_loss_fn(fake_img):
      logits, stats = d_apply(d_params, d_stats, fake_img)
      adv = losses.gan_generator_loss(logits)
      l1 = losses.l1_loss(fake_img, y)
      return adv + self.cfg.l1_weight * l1, (adv, l1, stats)
    (g_loss, (adv, l1, d_stats)), fake_grad = jax.value_and_grad(
        g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(fake_grad)
    new = {**state,
           "g": nets.update(g, self.tx, g_grads, batch_stats=g_stats),
           "d": {**d, "batch_stats": d_stats}}
    return new, {"loss": g_loss + d_loss, "d_loss": d_loss, "g_adv": adv,
                 "g_l1": l1}

  def landmark_step(self, state, batch, rng):
    """L1 on the points of faces moved at random with their points
    (rotation, scale, shift: augment_with_landmarks), so the regressor
    learns to find points rather than recall the training subjects."""
    c = self.cfg
    x, target = augment_lib.augment_with_landmarks(
        self.spec, rng, batch["image"], batch["image_landmarks"], train=True,
        rotate_deg=c.landmark_rotate_deg, scale=c.landmark_scale,
        shift=c.landmark_shift)
    lm = state["lm"]

    def loss_fn(params):
      pred, upd = self.lm.apply({"params": params,
                                 "batch_stats": lm["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
      return jnp.mean(jnp.abs(pred - target)), (pred, upd["batch_stats"])
    (loss, (pred, stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(lm["params"])
    nme = jnp.mean(normalised_mean_error(pred, target))
    return ({**state, "lm": nets.update(lm, self.lm_tx, grads,
                                        batch_stats=stats)},
            {"loss": loss, "nme": nme})

  # -- evaluation: the re-annotation experiment
  def _generate(self, state, x):
    g = state["g"]
    return self.g.apply({"params": g["params"],
                         "batch_stats": g["batch_stats"]}, x, train=False)

  def _landmarks(self, state, x):
    lm = state["lm"]
    return self.lm.apply({"params": lm["params"],
                          "batch_stats": lm["batch_stats"]}, x, train=False)

  def _feature_arrays(self, state, batch):
    """Landmarks (view fractions) predicted on each face and on its
    generated neutral, and the data set's own on the face and on its real
    neutral frame."""
    x = self.eval_view(batch)
    neutral = self._generate(state, x)
    src = batch["image"].shape[1]
    return (self._landmarks(state, x), self._landmarks(state, neutral),
            augment_lib.view_points(self.spec, batch["image_landmarks"], src),
            augment_lib.view_points(self.spec, batch["neutral_landmarks"],
                                    src))

  def evaluate_split(self, state, examples, out_dir):
    c = self.cfg
    if examples.table.landmarks is None:
      raise ValueError(f"{examples.table.name} has no landmarks: cgan_wsc "
                       "needs them to train its landmark regressor")
    expr, neutral, true, true_neutral = (np.asarray(a) for a in
                                         self.eval_outputs(
        self._features, state, examples, with_landmarks=True))
    labels = examples.label.astype(np.int64)
    k = self.num_classes
    noisy, _ = wsc.flip_labels(labels, c.label_noise, k, self.config.seed)
    noisy = np.asarray(noisy, np.int64)
    main = self.reannotate(expr, neutral, labels, noisy, k, "wse")
    kinds = {}
    for kind in wsc.FEATURE_KINDS:  # the feature sets side by side
      kinds[kind] = {
          "cgan": (main["accuracy"] if kind == c.features else
                   self.reannotate(expr, neutral, labels, noisy, k, "wse",
                                   kind=kind)["accuracy"]),
          "true_landmarks": self.reannotate(
              true, true_neutral, labels, noisy, k, "wse",
              kind=kind)["accuracy"]}
    forms = {form: (main["accuracy"] if form == c.form else
                    self.reannotate(expr, neutral, labels, noisy, k, "wse",
                                    form=form)["accuracy"])
             for form in wsc.FORMS}
    extra = {
        "noisy_label_accuracy": float(np.mean(noisy == labels)),
        "reannotation_accuracy": main["accuracy"],
        "features": c.features,
        "num_clusters": main["num_clusters"],
        "modularity": main["modularity"],
        "landmark_nme": float(np.mean(normalised_mean_error(expr, true))),
        "curve": main["curve"],
        "feature_weights": main.get("feature_weights"),
        # Re-annotation accuracy of each feature set (model's landmarks on
        # the face and the generated neutral; the data set's on the face
        # and the real neutral) and of each WSE form (issue 21).
        "feature_kinds": kinds,
        "wse_forms": forms,
        "baselines": {
            "pca": self.reannotate(expr, neutral, labels, noisy, k,
                                   "pca")["accuracy"],
            "not_optimised": self.reannotate(
                expr, None, labels, noisy, k, "wse", kind="geometric",
                weighted=False)["accuracy"],
            # Upper bound: the data set's landmarks on the face and on its
            # real neutral frame (perfect landmarking and neutral faces).
            "true_landmarks": kinds[c.features]["true_landmarks"],
            # The data set's points on the face, the regressor's on the
            # generated neutral: isolates the face's landmark error.
            "true_face_generated_neutral": self.reannotate(
                true, neutral, labels, noisy, k, "wse")["accuracy"]},
        "binary": self._binary_task(expr, neutral, labels),
        # Diagnostic, true labels: leave-one-out 5-NN accuracy in each
        # feature space, the most a clustering of it can re-annotate.
        "clean_label_knn_accuracy": {
            name: reannotate.neighbour_vote_accuracy(
                self.feature_matrix(e, n, labels, k)[0], labels)
            for name, (e, n) in (("cgan", (expr, neutral)),
                                 ("true_face_generated_neutral",
                                  (true, neutral)),
                                 ("true_landmarks", (true, true_neutral)))},
    }
    # The paper's use of the labels: a classifier trained on them.
    extra["classifier"] = self._classifier_task(expr, neutral, labels, noisy,
                                                examples.subjects, k)
    predicted = main["labels"]
    if c.score != "reannotation":
      # accuracy = the held-out halves' classifier predictions.
      which = c.score.split("_", 1)[1]
      predicted = np.asarray(extra["classifier"][which]["predictions"])
    for arm in ("reannotated", "noisy"):
      extra["classifier"][arm].pop("predictions")
    if out_dir and jax.process_index() == 0:
      save_curve(os.path.join(out_dir, "reannotation.png"), main["curve"],
                 extra["noisy_label_accuracy"])
    return labels, predicted, extra

  def wsc_config(self, **overrides):
    c = self.cfg
    cfg = reannotate.WSCConfig(
        knn_k=c.knn_k, embed_dim=c.embed_dim, lam=c.lam, eta=c.eta,
        form=c.form, max_iter=c.max_iter, rank_order_k=c.rank_order_k,
        candidates=tuple(c.candidates), cut=c.cut, vote=c.vote,
        min_cluster_size=c.min_cluster_size, init=c.wse_init,
        seed=self.config.seed)
    return dataclasses.replace(cfg, **overrides)

  def feature_matrix(self, expr, neutral, noisy, num_classes, kind=None,
                     weighted=True):
    """(x (N, F) to cluster, F1-F12's gain-ratio weights or None).

    kind (``cgan_wsc.features``, clustering.FEATURE_KINDS): 'geometric'
    F(expr) - F(neutral) (eq. 4-13), standardised and weighted by gain ratio
    on the noisy labels (eq. 14-18); 'displacement' the 136 landmark moves
    from the neutral (inter-ocular units, unweighted: one unit for all);
    'both' the two blocks, each scaled to unit total variance so neither
    outweighs the other by its width. neutral None: F(expr) alone (the
    paper's "not optimised" baseline; geometric only).
    """
    c = self.cfg
    kind = kind or c.features
    blocks, weights = [], None
    if kind in ("geometric", "both") or neutral is None:
      f = wsc.geometric_features(expr, neutral)
      if weighted:
        weights = wsc.feature_weights(f, noisy, num_classes, c.num_bins,
                                      select_threshold=c.select_threshold)
        if not bool(np.any(weights.keep)):
          # No feature reaches the threshold (near-uniform gain ratios):
          # keep them all, weighted, rather than an all-zero space.
          weights = weights._replace(
              keep=np.ones_like(np.asarray(weights.keep)))
      blocks.append(reannotate.prepare_features(f, weights))
    if kind in ("displacement", "both") and neutral is not None:
      blocks.append(wsc.landmark_displacements(expr, neutral))
    return reannotate.balance_blocks(blocks), weights

  def reannotate(self, expr, neutral, labels, noisy, num_classes, embedding,
                 weighted=True, kind=None, **overrides):
    """One re-annotation: features, embedding ('wse' | 'pca'), rank-order
    clustering, every candidate count scored; the max-modularity count's
    labels."""
    x, weights = self.feature_matrix(expr, neutral, noisy, num_classes, kind,
                                     weighted)
    n = x.shape[0]
    cfg = reannotate.resolve(self.wsc_config(**overrides), n, num_classes)
    if embedding == "pca":
      emb = wsc.pca_embedding(x, min(cfg.embed_dim, x.shape[1]))
    else:
      emb = reannotate.embed(x, noisy, num_classes, cfg)[1].embedding
    src, dst, _, z = reannotate.cluster_embedding(emb, cfg, num_classes)
    cands, q, cuts = reannotate.select_num_clusters(
        z, src, dst, cfg.candidates, min_size=reannotate.cut_min_size(cfg))
    votes = [np.asarray(reannotate.vote_at(cuts, i, noisy, num_classes,
                                           cfg.vote, cfg.min_cluster_size))
             for i in range(len(cands))]
    accs = [float(np.mean(v == labels)) for v in votes]
    best = int(np.argmax(q))
    out = {"labels": votes[best], "accuracy": accs[best],
           "num_clusters": int(cands[best]), "modularity": float(q[best]),
           "knn_k": cfg.knn_k, "rank_order_k": cfg.rank_order_k,
           "curve": [{"num_clusters": int(m), "modularity": float(mq),
                      "accuracy": a} for m, mq, a in zip(cands, q, accs)]}
    if weights is not None:
      out["feature_weights"] = {
          name: float(w) if bool(keep) else 0.0
          for name, w, keep in zip(wsc.FEATURE_NAMES,
                                   np.asarray(weights.weights),
                                   np.asarray(weights.keep))}
    return out

  def _classifier_task(self, expr, neutral, labels, noisy, subjects,
                       num_classes):
    """Two subject-disjoint halves of the split: each half's noisy labels
    are re-annotated on that half alone, a linear classifier
    (clustering.linear) is fitted to them (or to the noisy labels), and it
    predicts the other half, scored with the true labels. Each face is
    predicted once, by the classifier of the half it is not in."""
    subjects = np.asarray(subjects)
    if np.all(subjects < 0):  # no subjects recorded: alternate faces
      subjects = np.arange(len(labels))
    ids = np.unique(subjects)
    half = np.isin(subjects, ids[np.random.default_rng(
        self.config.seed).permutation(len(ids))[: len(ids) // 2]])
    # The classifier's input: the feature set's raw columns (it
    # standardises them on its training half; no weights from labels).
    x = np.concatenate(
        ([np.asarray(wsc.geometric_features(expr, neutral))]
         if self.cfg.features in ("geometric", "both") else [])
        + ([np.asarray(wsc.landmark_displacements(expr, neutral))]
           if self.cfg.features in ("displacement", "both") else []), axis=1)
    out = {arm: {"predictions": np.zeros(len(labels), np.int64)}
           for arm in ("reannotated", "noisy")}
    relabel_acc = []
    for train in (half, ~half):
      test = ~train
      r = self.reannotate(expr[train], neutral[train], labels[train],
                          noisy[train], num_classes, "wse")
      relabel_acc.append(r["accuracy"])
      for arm, y in (("reannotated", r["labels"]), ("noisy", noisy[train])):
        out[arm]["predictions"][test] = np.asarray(linear.fit_predict(
            x[train], y, x[test], num_classes))
    for arm in out:
      out[arm]["accuracy"] = float(np.mean(out[arm]["predictions"]
                                           == labels))
    out["halves_reannotation_accuracy"] = relabel_acc
    return out

  def _binary_task(self, expr, neutral, labels):
    """Positive (happiness, surprise) vs negative (disgust, fear, sadness)
    faces, labels flipped at the same rate."""
    canonical = np.asarray([classes_lib.canonical_index(self.classes[i])
                            for i in labels])
    binary, mask = (np.asarray(a) for a in wsc.to_binary(canonical))
    if mask.sum() < 3 or len(np.unique(binary[mask])) < 2:
      return None
    y = binary[mask].astype(np.int64)
    noisy, _ = wsc.flip_labels(y, self.cfg.label_noise, 2,
                               self.config.seed + 1)
    noisy = np.asarray(noisy, np.int64)
    r = self.reannotate(expr[mask], neutral[mask], y, noisy, 2, "wse")
    return {"accuracy": r["accuracy"],
            "noisy_label_accuracy": float(np.mean(noisy == y)),
            "num_clusters": r["num_clusters"], "modularity": r["modularity"],
            "num_examples": int(mask.sum())}

  @property
  def classes(self):
    return classes_lib.resolve_class_set(self.config.data.classes)

  def write_images(self, state, batch, out_dir, captions=(), num=8):
    """neutral.png: rows input | generated neutral face (G) | the real
    neutral frame of its sequence."""
    small = {k: v[:num] for k, v in batch.items()}
    x = self.eval_view(small)
    fake = jax.device_get(self._generate(state, x))
    viz.save_grid(os.path.join(out_dir, "neutral.png"),
                  [jax.device_get(x), fake,
                   jax.device_get(self.eval_view(small, "neutral"))],
                  row_labels=["input", "G: generated\nneutral",
                              "real neutral\n(same sequence)"],
                  col_labels=list(captions[:num]),
                  title="cGAN: the neutral face G generates from each "
                  "expression, beside the real one",
                  legend="true: the face's (possibly noisy) label; cGAN+WSC "
                  "has no classifier, so no pred")


def save_curve(path, curve, noisy_accuracy):
  """Fig. 8: re-annotation accuracy and modularity against cluster count."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  n = [p["num_clusters"] for p in curve]
  fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
  ax.plot(n, [p["accuracy"] for p in curve], "o-", label="re-annotated")
  ax.axhline(noisy_accuracy, color="grey", ls="--", label="noisy labels")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("number of clusters")
  ax.set_ylabel("accuracy")
  ax2 = ax.twinx()
  ax2.plot(n, [p["modularity"] for p in curve], "s:", color="tab:red",
           label="modularity")
  ax2.set_ylabel("modularity", color="tab:red")
  ax.legend(loc="lower left", fontsize=7)
  fig.tight_layout()
  viz.save_figure(path, fig)
