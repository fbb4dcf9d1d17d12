"""Dev: train only the cGAN (variant config) and track how much expression
the generated neutral keeps (alpha, as seen by the regressor of RUN, a full run with its checkpoints:
here s1_lm800, the name its workdir had was s1_default)."""
import sys, time, json, numpy as np, jax, jax.numpy as jnp
from fer_jax import evaluate, nets
from fer_jax.registry import method_class
from fer_jax.data import pipeline
run, name = sys.argv[1], sys.argv[2]
over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
checks = [int(s) for s in sys.argv[4].split(",")]
m = evaluate.load(run)
cfg = m.config
for k, v in over.items():
  sec, f = k.split(".")
  with cfg.unlocked(): cfg[sec][f] = v
cfg.cgan_wsc.cgan_steps = checks[-1]
meth = method_class("cgan_wsc")(cfg, num_classes=m.method.num_classes,
                                count_examples=lambda kind, role: 1000)
tr = m.data.examples("train", "neutral_pair", cfg.data.role)
xs, ns = [], []
for b in pipeline.eval_batches(tr, 256):
  k = b["mask"]; xs.append(b["image"][k]); ns.append(b["neutral"][k])
xs, ns = np.concatenate(xs), np.concatenate(ns)
print("pairs", xs.shape, flush=True)
rng = jax.random.PRNGKey(0)
init = meth.init_state(rng, None)
st = {"g": init["g"], "d": init["d"], "lm": m.state["lm"]}
step = jax.jit(meth.cgan_step)
ex = m.examples("test")
def f(state, batch):
  x = meth.eval_view(batch); real_n = meth.eval_view(batch, "neutral")
  gen = meth._generate(state, x)
  return (meth._landmarks(state, x), meth._landmarks(state, gen), meth._landmarks(state, real_n),
          jnp.mean(jnp.abs(gen - real_n), axis=(1, 2, 3)))
ff = jax.jit(f)
r = np.random.default_rng(0); t0 = time.time(); bs = cfg.train.batch_size
for i in range(1, checks[-1] + 1):
  idx = r.integers(0, len(xs), bs)
  st, met = step(st, {"image": xs[idx], "neutral": ns[idx]}, jax.random.fold_in(rng, i))
  if i in checks:
    e, g, rn, l1 = [np.asarray(a) for a in meth.eval_outputs(ff, st, ex, with_landmarks=True)]
    iod = np.linalg.norm(rn[:, 36] - rn[:, 45], axis=-1)[:, None, None]
    de = ((e - rn) / iod).reshape(len(e), -1); dg = ((g - rn) / iod).reshape(len(e), -1)
    alpha = float((dg * de).sum() / (de ** 2).sum())
    resid = float(np.sqrt(((dg - alpha * de) ** 2).mean()))
    out = dict(name=name, step=i, s=round(time.time() - t0), alpha=alpha, resid_rms=resid,
               expr_rms=float(np.sqrt((de ** 2).mean())), test_l1=float(l1.mean()),
               train_l1=float(met["g_l1"]))
    print(json.dumps(out), flush=True)

