import sys, numpy as np, jax, jax.numpy as jnp
from fer_jax import evaluate
m = evaluate.load(sys.argv[1]); meth, st = m.method, m.state
ex = m.examples("test")
def f(state, batch):
  x = meth.eval_view(batch); rn = meth.eval_view(batch, "neutral"); g = meth._generate(state, x)
  return jnp.mean(jnp.abs(x - rn), axis=(1,2,3)), jnp.mean(jnp.abs(g - rn), axis=(1,2,3)), jnp.mean(jnp.abs(g - x), axis=(1,2,3))
a, b, c = [np.asarray(v) for v in meth.eval_outputs(jax.jit(f), st, ex)]
print("L1 copy(face->real neutral)", a.mean(), "G->real neutral", b.mean(), "G->face", c.mean())
