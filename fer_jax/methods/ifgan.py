"""IF-GAN: identity-free conditional GAN (Cai et al. 2021).

G, a U-Net with three SAGAN blocks, maps an expressive face I_SE to the
"average identity" face of its expression, I_AE: the mean of the fold's
aligned training images of that class. D, a 70x70 PatchGAN, judges the tuples
{I_SE, I_AE} (real) and {I_SE, G(I_SE)} (fake). E, a ResNet, classifies the
tuples (eq. 4) with an island loss on its features (eq. 5). One step updates
D, then G and E jointly with L = 1 cGAN + 20 L1 + 10 softmax + 1 island
(eq. 1). Test: E({I_SE, G(I_SE)}).

Gradient routing (docs/methods.md section 2): G learns from the adversarial
term, L1 and E's softmax on the fake tuple; E from the softmax on both
tuples and the island loss; D from eq. 2 alone. The island loss is taken on
the real tuples' features: on the fake tuples' it would also push G, which
the paper does not route to G.
"""

from __future__ import annotations

import io
import os

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import files, losses, nets, viz
from fer_jax.data import augment as augment_lib
from fer_jax.data.frames import DataError
from fer_jax.methods import base
from fer_jax.models.classifier import ResNetClassifier
from fer_jax.models.patchgan import PatchGAN
from fer_jax.models.unet import IFGAN_ATTENTION, UNet

CLASSIFIER_INPUTS = ("pair", "generated")
# Query points of the attention figure (fig. 6), as (row, col) fractions of
# the face: the two eyes and the mouth.
ATTENTION_QUERIES = ((0.42, 0.36), (0.42, 0.64), (0.74, 0.50))
QUERY_NAMES = ("left eye", "right eye", "mouth")  # where those points sit


def class_averages(examples, num_classes: int) -> np.ndarray:
  """I_AE: per class, the mean image of the given (training) examples.

  Returns float32 (K, H, W, C) in 0..255; raises if a class has no image.
  """
  images = examples.table.images
  shape = examples.table.image_shape
  sums = np.zeros((num_classes,) + shape, np.float64)
  counts = np.zeros(num_classes, np.int64)
  rows = examples.slots["image"]
  for start in range(0, len(rows), 256):
    idx = slice(start, start + 256)
    np.add.at(sums, examples.label[idx],
              np.asarray(images[rows[idx]], np.float64))
    np.add.at(counts, examples.label[idx], 1)
  if np.any(counts == 0):
    raise DataError(f"classes {np.flatnonzero(counts == 0).tolist()} have no "
                    "training image, so IF-GAN has no class-average target")
  return (sums / counts[:, None, None, None]).astype(np.float32)


class IFGAN(base.Method):
  name = "ifgan"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    c = self.cfg = config.ifgan
    if c.classifier_input not in CLASSIFIER_INPUTS:
      raise ValueError(f"config.ifgan.classifier_input="
                       f"{c.classifier_input!r}; choose one of "
                       f"{CLASSIFIER_INPUTS}")
    self.g = UNet(depth=c.unet_depth, base_features=c.unet_features,
                  max_features=c.unet_max_features,
                  num_dropout=c.unet_dropout_layers,
                  attention=IFGAN_ATTENTION if c.attention else (),
                  dtype=self.dtype, fast_layers=self.fast_layers)
    self.d = PatchGAN(base_features=c.d_features, num_layers=c.d_layers,
                      dtype=self.dtype, fast_layers=self.fast_layers)
    self.e = ResNetClassifier(config.model.arch, self.num_classes,
                              base_width=config.model.base_width,
                              dtype=self.dtype, fast_layers=self.fast_layers)
    self.plan_single_phase("single")
    # Jitted once: every evaluation reuses the compiled picture function.
    self._pictures = jax.jit(self._picture_arrays)
    self.class_avg = None

  # -- data
  def prepare(self, data, workdir):
    """Class averages of this fold's training split, cached in the workdir."""
    ex = data.examples("train", "single", self.role)
    path = files.join(workdir, "class_averages.npz")
    key = f"{data.table.name}|fold{self.config.data.fold}|{len(ex)}"
    if files.exists(path):
      cached = np.load(io.BytesIO(files.read_bytes(path)))
      if str(cached["key"]) == key:
        self.class_avg = cached["images"]
        return
    self.class_avg = class_averages(ex, self.num_classes)
    if jax.process_index() == 0:
      buf = io.BytesIO()
      np.savez(buf, images=self.class_avg, key=key)
      files.write_bytes_atomic(path, buf.getvalue())
      viz.save_grid(files.join(workdir, "class_averages.png"),
                    [self.class_avg.round().astype(np.uint8)],
                    row_labels=["average\ntraining\nface"],
                    col_labels=list(data.classes),
                    title="IF-GAN's targets: each class's average training "
                    f"face (fold {self.config.data.fold})",
                    legend="each column: the pixel-wise mean of the fold's "
                    "training faces of that class, G's target for it")

  # -- state
  def _e_input(self, x, other):
    if self.cfg.classifier_input == "pair":
      return jnp.concatenate([x, other], axis=-1)
    return other

  def init_state(self, rng, batch):
    if self.class_avg is None:
      raise RuntimeError("IFGAN.prepare(data, workdir) must run first")
    kg, kd, ke, kc = jax.random.split(rng, 4)
    s, ch = self.spec.crop, self.spec.channels
    img = jnp.zeros((1, s, s, ch), jnp.float32)
    g_vars = self.g.init(kg, img, train=False)
    d_vars = self.d.init(kd, jnp.zeros((1, s, s, 2 * ch)), train=False)
    e_vars = self.e.init(ke, self._e_input(img, img), train=False)
    feat_dim = e_vars["params"]["fc"]["kernel"].shape[0]
    e_params = {"net": e_vars["params"],
                "centers": 0.1 * jax.random.normal(
                    kc, (self.num_classes, feat_dim))}
    return {"g": nets.network_state(g_vars, self.tx),
            "d": nets.network_state(d_vars, self.tx),
            "e": nets.network_state(e_vars, self.tx, params=e_params),
            "class_avg": jnp.asarray(self.class_avg)}

  def load_pretrained(self, state):
    """E's ResNet backbone from ``config.init_from`` (ImageNet weights); on
    the 6-channel pair input the RGB first conv is tiled over both halves
    and halved, so a pair of equal images starts with ImageNet's response."""
    loaded = self.pretrained_weights()
    if loaded is None:
      return state
    e = self.fit_pretrained(state["e"], loaded, ("params", "net", "backbone"),
                            ("batch_stats", "backbone"),
                            "IF-GAN's E (ResNet backbone)")
    return {**state, "e": e}

  def prepare_for_benchmark(self, image_shape):
    self.class_avg = np.random.default_rng(0).uniform(
        0, 255, (self.num_classes,) + tuple(image_shape)).astype(np.float32)

  def phases(self):
    return [base.Phase("ifgan", self.num_steps, self.batch_size,
                       self.train_step, example_kind="single",
                       role=self.role)]

  # -- the step
  def _d_logits(self, d, params, tuples):
    logits, upd = self.d.apply({"params": params,
                                "batch_stats": d["batch_stats"]}, tuples,
                               train=True, mutable=["batch_stats"])
    return logits, upd["batch_stats"]

  def train_step(self, state, batch, rng):
    c = self.cfg
    k_aug, k_drop = jax.random.split(rng)
    labels = batch["label"]
    target_u8 = state["class_avg"][labels]
    views = jnp.stack([batch["image"].astype(jnp.float32), target_u8], 1)
    views = augment_lib.augment(self.spec, k_aug, views, train=True)
    x, target = views[:, 0], views[:, 1]

    # G forward once; its VJP carries the G/E losses' image gradient back.
    def g_forward(params):
      out, upd = self.g.apply(
          {"params": params, "batch_stats": state["g"]["batch_stats"]}, x,
          train=True, rngs={"dropout": k_drop}, mutable=["batch_stats"])
      return out, upd["batch_stats"]
    fake, g_vjp, g_stats = jax.vjp(g_forward, state["g"]["params"],
                                   has_aux=True)

    # D: eq. 2 on the real tuple and the (detached) fake tuple.
    d = state["d"]
    real_tuple = jnp.concatenate([x, target], -1)
    fake_tuple = jnp.concatenate([x, jax.lax.stop_gradient(fake)], -1)

    def d_loss_fn(params):
      fake_logits, stats = self._d_logits(d, params, fake_tuple)
      real_logits, stats = self._d_logits({"batch_stats": stats}, params,
                                          real_tuple)
      return c.w_gan * losses.gan_discriminator_loss(real_logits,
                                                     fake_logits), stats
    (d_loss, d_stats), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(d["params"])
    d = nets.update(d, self.tx, d_grads)
    d_params = d["params"]

    # G and E jointly, against the updated D.
    e = state["e"]

    def ge_loss_fn(fake_img, e_params):
      adv_logits, d_stats2 = self._d_logits(
          {"batch_stats": d_stats}, d_params,
          jnp.concatenate([x, fake_img], -1))
      # Real and fake tuples in separate BatchNorm batches: a shared batch
      # would carry the real tuples' losses into G through the statistics.
      def e_apply(inputs, stats):
        (logits, feats), upd = self.e.apply(
            {"params": e_params["net"], "batch_stats": stats}, inputs,
            train=True, mutable=["batch_stats"])
        return logits, feats, upd["batch_stats"]
      real_logits, real_feats, e_stats = e_apply(
          self._e_input(x, target), e["batch_stats"])
      fake_logits, _, e_stats = e_apply(self._e_input(x, fake_img), e_stats)
      ce_real = losses.cross_entropy(real_logits, labels)
      ce_fake = losses.cross_entropy(fake_logits, labels)
      island = losses.island_loss(real_feats, labels, e_params["centers"],
                                  c.island_alpha)
      adv = losses.gan_generator_loss(adv_logits)
      l1 = losses.l1_loss(fake_img, target)
      total = (c.w_gan * adv + c.w_l1 * l1 + c.w_softmax * (ce_real + ce_fake)
               + c.w_island * island)
      aux = {"adv": adv, "l1": l1, "ce_real": ce_real, "ce_fake": ce_fake,
             "island": island, "fake_logits": fake_logits,
             "d_stats": d_stats2, "e_stats": e_stats}
      return total, aux
    (ge_loss, aux), (fake_grad, e_grads) = jax.value_and_grad(
        ge_loss_fn, argnums=(0, 1), has_aux=True)(fake, e["params"])
    (g_grads,) = g_vjp(fake_grad)
    new_state = {
        "g": nets.update(state["g"], self.tx, g_grads, batch_stats=g_stats),
        "d": {**d, "batch_stats": aux["d_stats"]},
        "e": nets.update(e, self.tx, e_grads, batch_stats=aux["e_stats"]),
        "class_avg": state["class_avg"],
    }
    metrics = {"loss": ge_loss + d_loss, "d_loss": d_loss,
               "g_adv": aux["adv"], "g_l1": aux["l1"],
               "ce_real": aux["ce_real"], "ce_fake": aux["ce_fake"],
               "island": aux["island"],
               "accuracy": losses.accuracy(aux["fake_logits"], labels)}
    return new_state, metrics

  # -- inference
  def _generate(self, state, x, return_attention=False):
    g = state["g"]
    return self.g.apply({"params": g["params"],
                         "batch_stats": g["batch_stats"]}, x, train=False,
                        return_attention=return_attention)

  def generate(self, state, batch, return_attention=False):
    """G(I_SE) in inference mode (BN running statistics, no dropout)."""
    return self._generate(state, self.eval_view(batch), return_attention)

  def predict(self, state, batch):
    x = self.eval_view(batch)
    fake = self._generate(state, x)
    e = state["e"]
    logits, _ = self.e.apply({"params": e["params"]["net"],
                              "batch_stats": e["batch_stats"]},
                             self._e_input(x, fake), train=False)
    return logits

  def _generated_stats(self, state, batch):
    """Is G(I_SE) its class's average face? Mean L1 (in [-1, 1] units) of
    G(x) to the true class's I_AE and to the nearest other class's, and how
    often the nearest I_AE is the true class's."""
    x = self.eval_view(batch)
    fake = self._generate(state, x)
    k = state["class_avg"].shape[0]
    avgs = augment_lib.augment(self.spec, jax.random.key(0),
                               state["class_avg"][:, None], train=False)[:, 0]
    dist = jnp.abs(fake[:, None] - avgs[None]).mean(axis=(2, 3, 4))  # (B, K)
    labels = batch["label"]
    true = jnp.take_along_axis(dist, labels[:, None], 1)[:, 0]
    other = jnp.where(jax.nn.one_hot(labels, k, dtype=bool), jnp.inf,
                      dist).min(1)
    return {"l1_to_true_class_average": true.mean(),
            "l1_to_nearest_other_class_average": other.mean(),
            "nearest_class_average_accuracy":
                (dist.argmin(1) == labels).mean()}

  def _write_generated_stats(self, state, batch, out_dir):
    if not hasattr(self, "_stats_fn"):
      self._stats_fn = jax.jit(self._generated_stats)
    stats = {k: float(v) for k, v in
             jax.device_get(self._stats_fn(state, batch)).items()}
    stats["num_examples"] = int(batch["label"].shape[0])
    if jax.process_index() == 0:
      files.write_json_atomic(files.join(out_dir, "generated_stats.json"),
                              stats, indent=1)

  def _picture_arrays(self, state, batch):
    """Input, G(input), attention maps and class-average target, eval view."""
    x = self.eval_view(batch)
    fake, maps = self._generate(state, x, return_attention=True)
    target = augment_lib.augment(
        self.spec, jax.random.key(0),
        state["class_avg"][batch["label"]][:, None], train=False)[:, 0]
    return x, fake, maps, target

  def write_images(self, state, batch, out_dir, captions=(), num=8):
    """generated.png: rows input | G(input) | class-average target of the
    true class; attention.png: input, G(input), then the last decoder
    attention block's map for three query points (paper fig. 6)."""
    self._write_generated_stats(state, batch, out_dir)
    small = {k: v[:num] for k, v in batch.items()}
    x, fake, maps, target = jax.device_get(self._pictures(state, small))
    viz.save_grid(os.path.join(out_dir, "generated.png"), [x, fake, target],
                  row_labels=["input I_SE", "G(I_SE)", "target: average\n"
                              "face of the\ntrue class"],
                  col_labels=list(captions[:num]),
                  title="IF-GAN: G turns a face into its class's average "
                  "face (eq. 2); pred = E's class",
                  legend="true: the face's label; pred: the class E "
                  "predicts for it")
    if not maps:
      return
    name = sorted(k for k in maps if k.startswith("decoder"))[0]
    att = np.asarray(maps[name])  # (B, hw, hw)
    side = int(round(np.sqrt(att.shape[-1])))
    size = x.shape[1]
    rows, labels = [], []
    for i in range(min(4, len(x))):
      labels.append(captions[i] if i < len(captions) else "")
      row = [x[i], fake[i]]
      for qy, qx in ATTENTION_QUERIES:
        q = int(qy * side) * side + int(qx * side)
        heat = att[i, q].reshape(side, side)
        row.append(viz.heatmap(heat, size, marker=(qy, qx)))
      rows.append(np.stack([viz.to_uint8(r) for r in row]))
    viz.save_grid(
        os.path.join(out_dir, "attention.png"), rows, row_labels=labels,
        col_labels=["input", "G(input)"] + [
            f"attention from\n{n} (+)" for n in QUERY_NAMES],
        title=f"IF-GAN: where G's last decoder attention ({name}) looks "
        "from each query point (paper fig. 6)", legend=viz.HEAT_LEGEND)
