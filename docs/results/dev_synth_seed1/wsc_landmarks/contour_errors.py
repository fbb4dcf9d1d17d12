import sys, numpy as np, jax
from fer_jax import evaluate
from fer_jax.data import augment as augment_lib
m = evaluate.load(sys.argv[1]); meth, st = m.method, m.state
ex = m.examples("test")
def f(state, batch):
  x = meth.eval_view(batch); src = batch["image"].shape[1]
  return (meth._landmarks(state, x), augment_lib.view_points(meth.spec, batch["image_landmarks"], src),
          augment_lib.view_points(meth.spec, batch["neutral_landmarks"], src))
e, te, tn = [np.asarray(a) for a in meth.eval_outputs(jax.jit(f), st, ex, with_landmarks=True)]
iod = np.linalg.norm(te[:,36]-te[:,45],axis=-1)[:,None]
contours = {"jaw": list(range(0,17)), "left brow": list(range(17,22)), "right brow": list(range(22,27)),
  "nose bridge": list(range(27,31)), "outer lip": list(range(48,60))+[48], "inner lip": list(range(60,68))+[60]}
for name, idx in contours.items():
  closed = idx[0] == idx[-1]
  pts = idx[:-1] if closed else idx
  tn_, nn_, td_, nd_ = [], [], [], []
  for j, p in enumerate(pts):
    if closed:
      a, b = pts[j-1], pts[(j+1) % len(pts)]
    else:
      if j == 0 or j == len(pts)-1: continue
      a, b = pts[j-1], pts[j+1]
    t = te[:, b] - te[:, a]; t /= np.linalg.norm(t, axis=-1, keepdims=True)
    n = np.stack([-t[:,1], t[:,0]], -1)
    err = e[:, p] - te[:, p]; d = te[:, p] - tn[:, p]
    tn_.append(np.abs((err*t).sum(-1))/iod[:,0]); nn_.append(np.abs((err*n).sum(-1))/iod[:,0])
    td_.append(np.abs((d*t).sum(-1))/iod[:,0]); nd_.append(np.abs((d*n).sum(-1))/iod[:,0])
  print(f"{name:12s} error tangential {np.mean(tn_):.4f} normal {np.mean(nn_):.4f} | true expression move tangential {np.mean(td_):.4f} normal {np.mean(nd_):.4f}")
ends = [0,16,17,21,22,26,36,39,42,45,48,54,30,33]
err = np.linalg.norm(e-te,axis=-1)/iod
print("end/corner points error", err[:, ends].mean().round(4), "all", err.mean().round(4))
