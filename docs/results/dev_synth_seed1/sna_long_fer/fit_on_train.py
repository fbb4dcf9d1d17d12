import sys, numpy as np, jax
from fer_jax import evaluate
wd = sys.argv[1]
m = evaluate.load(wd)
ex = m.data.examples("train", "single", "peak")
rows = ex.slots["image"]
imgs = np.asarray(ex.table.images[rows]) if not hasattr(ex.table.images, "read") else ex.table.images.read(rows)
flipped = ex.label != ex.clean_label
out = {}
for name in ("fer", "fer0"):
  loop0 = m.loop
  st = dict(m.state); st["fer"] = m.state[name]
  m.loop = dict(loop0, model=st)
  try:
    pred = m.predict(imgs)
  finally:
    m.loop = loop0
  out[name] = pred
  print(f"{name}: flipped n={flipped.sum()}: predicted as noisy label {np.mean(pred[flipped]==ex.label[flipped]):.3f}, as true label {np.mean(pred[flipped]==ex.clean_label[flipped]):.3f}; clean train acc {np.mean(pred[~flipped]==ex.label[~flipped]):.3f}")
