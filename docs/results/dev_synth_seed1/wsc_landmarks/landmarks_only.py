"""Dev (synth seed 1, fold 0 test split of RUN, a full run with
its checkpoints: here s1_lm800, whose workdir was named s1_default): retrain only
the landmark regressor with a variant config, keep that run's G, score NME,
clean 5-NN and re-annotation."""
import sys, time, json, numpy as np, jax, jax.numpy as jnp
from fer_jax import evaluate, nets
from fer_jax.registry import method_class
from fer_jax.data import pipeline, augment as augment_lib
from fer_jax.clustering import reannotate
from fer_jax import clustering as wsc
from fer_jax.models.landmarks import normalised_mean_error
run, name = sys.argv[1], sys.argv[2]
over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
m = evaluate.load(run)
cfg = m.config
for k, v in over.items():
  sec, f = k.split(".")
  cfg[sec][f] = v
meth = method_class("cgan_wsc")(cfg, num_classes=m.method.num_classes,
                                count_examples=lambda kind, role: 1000)
g_state = m.state
tr = m.data.examples("train", "single", "all")
imgs, lms = [], []
for b in pipeline.eval_batches(tr, 256, True):
  keep = b["mask"]; imgs.append(b["image"][keep]); lms.append(b["image_landmarks"][keep])
imgs, lms = np.concatenate(imgs), np.concatenate(lms)
print("train images", imgs.shape)
steps = meth.landmark_steps; bs = cfg.train.batch_size
rng = jax.random.PRNGKey(0)
st = {"lm": nets.network_state(
    meth.lm.init(rng, jnp.zeros((1, 64, 64, 3)), train=False), meth.lm_tx)}
step = jax.jit(meth.landmark_step)
perm = np.random.default_rng(0)
t0 = time.time()
for i in range(steps):
  idx = perm.integers(0, len(imgs), bs)
  st, met = step(st, {"image": imgs[idx], "image_landmarks": lms[idx]}, jax.random.fold_in(rng, i))
  if i % 200 == 0 or i == steps - 1:
    print(i, {k: float(v) for k, v in met.items()}, f"{time.time()-t0:.0f}s", flush=True)
train_s = time.time() - t0
full = {**g_state, "lm": st["lm"]}
sub = np.random.default_rng(1).choice(len(imgs), 512, replace=False)
xs = augment_lib.augment_with_landmarks(meth.spec, rng, imgs[sub], lms[sub], train=False)
tr_pred = jax.jit(meth._landmarks)(full, xs[0])
train_nme = float(np.mean(normalised_mean_error(tr_pred, xs[1])))
ex = m.examples("test")
def f(state, batch):
  x = meth.eval_view(batch); real_n = meth.eval_view(batch, "neutral")
  gen = meth._generate(state, x); src = batch["image"].shape[1]
  return (meth._landmarks(state, x), meth._landmarks(state, gen), meth._landmarks(state, real_n),
          augment_lib.view_points(meth.spec, batch["image_landmarks"], src),
          augment_lib.view_points(meth.spec, batch["neutral_landmarks"], src))
e, g, rn, te, tn = [np.asarray(a) for a in meth.eval_outputs(jax.jit(f), full, ex, with_landmarks=True)]
y = ex.label.astype(np.int64); k = meth.num_classes
noisy = np.asarray(wsc.flip_labels(y, meth.cfg.label_noise, k, cfg.seed)[0], np.int64)
nme = lambda a, b: float(np.mean(normalised_mean_error(a, b)))
out = {"name": name, "over": over, "steps": steps, "train_s": round(train_s), "nme_train_eval": train_nme, "nme_face": nme(e, te), "nme_gen_vs_true_neutral": nme(g, tn),
       "nme_real_neutral": nme(rn, tn), "noisy": float(np.mean(noisy == y))}
for pair, (a, b) in {"gen": (e, g), "real_neutral": (e, rn)}.items():
  x = meth.feature_matrix(a, b, y, k)[0]
  out[f"knn_{pair}"] = reannotate.neighbour_vote_accuracy(x, y)
  out[f"reann_{pair}"] = meth.reannotate(a, b, y, noisy, k, "wse")["accuracy"]
print(json.dumps(out))

