"""How the cGAN+WSC clustering pipeline scales with N.

  python benchmarks/wsc_scaling.py --sizes=1000,10000,100000,1000000

Synthetic 12-d features (a mixture of 6 Gaussian classes, 30% of the labels
flipped) go through every stage of fer_jax.clustering: the mutual k-NN
graph (graph.search_method: on the CPU exact up to 2e4 points, the host's
k-means cells above; on an accelerator exact up to 1e5, the JAX
random-projection forest above; --knn_method), the WSE solver with a fixed iteration cap, the
rank-order graph of the embedding, agglomerative clustering, and the
modularity of every candidate cut plus the vote. Each size runs in a fresh
subprocess so its peak RSS (``resource.getrusage``) is its own. Printed: a
markdown table of seconds per stage (wall; the total also in process CPU
seconds, which a shared CPU does not inflate; steady state: each stage runs
``--repeat`` times and the last run counts; above ``--repeat_max_n`` once,
so XLA compilation is included there), the first-call total and its XLA
compile seconds (JAX monitoring events), peak RSS, the device, and the
log-log slope of time against N per stage.

The clustering settings follow N by default (issue 21;
fer_jax.clustering.reannotate.scaled_settings: --knn_k / --rank_k 0), with
the normalized WSE form started from the noisy labels, cuts counting only
clusters of >= 8 points (--cut=min_size) and the absolute vote down the
tree (--vote=tree); --form=matlab --init=random --vote=plurality --cut=count --knn_k=100
--rank_k=20
--candidates=16,32,64,128,256,512 is the earlier fixed setup. Where JAX
runs on a GPU, the k-NN search, the WSE iterations and the rank-order
distances run there; the linkage, cuts and modularity are host-side numpy
(agglomerative.py: dynamic shapes).

Memory is O(N k) plus one (block, N) search tile; the exact search's work is
O(N^2 d) (slope ~2 once it dominates), everything else O(N k) per iteration.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

STAGES = ("knn_graph", "wse", "rank_order", "agglomerative", "modularity")
# XLA's compile time (tracing nests, so trace events would double count).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic(n: int, dim: int, num_classes: int, seed: int):
  import numpy as np
  rng = np.random.default_rng(seed)
  centers = rng.normal(0.0, 3.0, (num_classes, dim))
  y = rng.integers(0, num_classes, n)
  x = (centers[y] + rng.normal(0.0, 1.0, (n, dim))).astype(np.float32)
  return x, y


def run_one(args) -> dict:
  """All stages at one N, in this process."""
  import jax
  import numpy as np

  from fer_jax.clustering import (agglomerative, labels, rank_order,
                                  reannotate, wse)
  from fer_jax.clustering import graph as graph_lib

  compile_s = collections.defaultdict(float)
  current = ["setup"]

  def listener(name, secs, **_):
    if name == COMPILE_EVENT:
      compile_s[current[0]] += secs

  jax.monitoring.register_event_duration_secs_listener(listener)
  if args.tracemalloc:
    tracemalloc.start()
  n = args.n
  x, y = synthetic(n, args.features, args.classes, args.seed)
  noisy = np.asarray(labels.flip_labels(y, 0.3, args.classes, args.seed)[0])
  cands = tuple(int(c) for c in args.candidates.split(",") if c)
  cfg = reannotate.resolve(reannotate.WSCConfig(
      knn_k=args.knn_k, rank_order_k=args.rank_k, embed_dim=args.dim,
      lam=args.lam, form=args.form, init=args.init, vote=args.vote,
      min_cluster_size=args.min_cluster_size, candidates=cands, cut=args.cut,
      tile_bytes=args.tile_mb * 2**20), n, args.classes)
  args.knn_k, args.rank_k = cfg.knn_k, cfg.rank_order_k
  xs = jax.block_until_ready(reannotate.prepare_features(x))
  rss_start = peak_rss_mib()  # JAX, XLA and the inputs, before any stage
  times, first, rss, cpu = {}, {}, {}, {}
  out = {}
  repeat = args.repeat if n <= args.repeat_max_n else 1

  def stage(name, fn):
    """Run fn ``repeat`` times: first call (compiles) and the last one."""
    current[0] = name
    for i in range(repeat):
      t0, c0 = time.perf_counter(), time.process_time()
      res = jax.block_until_ready(fn())
      dt = time.perf_counter() - t0
      if i == 0:
        first[name] = dt
    times[name] = dt
    cpu[name] = time.process_time() - c0
    rss[name] = peak_rss_mib()
    return res

  g = stage("knn_graph", lambda: graph_lib.mutual_knn_graph(
      xs, k=min(args.knn_k, n - 1), tile_bytes=cfg.tile_bytes,
      method=args.knn_method, num_trees=args.knn_trees,
      connect_isolated=(cfg.form == "normalized"
                        and not args.stochastic_partitions)))
  out["mutual_edges"] = int(np.asarray(g.mutual).sum()) // 2
  out["knn_search"] = graph_lib.search_method(args.knn_method, n)
  init = (reannotate.label_init(noisy, args.classes, args.dim,
                                jax.random.PRNGKey(1))
          if cfg.init == "labels" else None)
  if args.stochastic_partitions:
    res = stage("wse", lambda: wse.wse_embedding_stochastic(
        g, noisy, args.classes, dim=args.dim, lam=args.lam,
        num_partitions=args.stochastic_partitions, tol=0.0,
        max_epochs=args.max_iter, init=init))
  else:
    res = stage("wse", lambda: wse.wse_embedding(
        g, noisy, args.classes, dim=args.dim, lam=args.lam, tol=0.0,
        max_iter=args.max_iter, form=cfg.form, init=init))
  out["wse_iters"] = int(res.num_iters)

  def ranks():
    ro = rank_order.rank_order_graph(res.embedding, k=min(args.rank_k, n - 1),
                                     tile_bytes=cfg.tile_bytes,
                                     method=args.knn_method,
                                     num_trees=args.knn_trees)
    return ro

  ro = stage("rank_order", ranks)

  def cluster():
    src, dst, dist = rank_order.undirected_edges(ro)
    z = agglomerative.linkage(n, src, dst, dist, cfg.linkage)
    if cfg.bridge_components:
      z = reannotate.bridged_linkage(res.embedding, z, src, dst, dist, cfg)
    return src, dst, z

  src, dst, z = stage("agglomerative", cluster)
  out["rank_order_edges"] = len(src)

  def select():
    cands, q, cuts = reannotate.select_num_clusters(
        z, src, dst, cfg.candidates, min_size=reannotate.cut_min_size(cfg))
    best = int(np.argmax(q))
    new = reannotate.vote_at(cuts, best, noisy, args.classes, cfg.vote,
                             cfg.min_cluster_size)
    return cands, q, np.asarray(new)

  cands, q, new = stage("modularity", select)
  out.update(
      knn_k=cfg.knn_k, rank_order_k=cfg.rank_order_k,
      candidates=list(cfg.candidates), form=cfg.form, init=cfg.init,
      vote=cfg.vote, cut=cfg.cut, n=n, device=str(jax.devices()[0]), platform=jax.default_backend(),
      times=times, cpu=cpu, first_call=first, repeat=repeat,
      compile=dict(compile_s), rss_mib=rss, rss_start_mib=rss_start,
      peak_rss_mib=peak_rss_mib(), num_clusters=int(cands[int(np.argmax(q))]),
      max_modularity=float(np.max(q)),
      accuracy_noisy=float((noisy == y).mean()),
      accuracy_reannotated=float((new == y).mean()))
  if args.tracemalloc:
    out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
  return out


def slope(ns, ts):
  """Least-squares slope of log t against log N."""
  import numpy as np
  ns, ts = np.log(np.asarray(ns, float)), np.log(np.asarray(ts, float))
  if len(ns) < 2:
    return float("nan")
  return float(np.polyfit(ns, ts, 1)[0])


def table(rows) -> str:
  head = ("| N (k-NN search) | k / rank k | " + " | ".join(f"{s} s" for s in STAGES)
          + " | total s | total CPU s | first call s (XLA compile s)"
          " | peak RSS MiB (stages' growth)"
          " | edges (mutual / rank-order) | WSE iters | clusters (Q)"
          " | acc noisy -> re-annotated | device |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    t = r["times"]
    lines.append(
        f"| {r['n']:,} ({r.get('knn_search', 'exact')}) | "
        f"{r.get('knn_k', '?')} / {r.get('rank_order_k', '?')} | "
        + " | ".join(f"{t[s]:.2f}" for s in STAGES)
        + f" | {sum(t.values()):.2f}"
        f" | {sum(r.get('cpu', {}).values()):.2f}"
        f" | {sum(r['first_call'].values()):.2f}"
        f" ({sum(r['compile'].get(s, 0.0) for s in STAGES):.2f})"
        f" | {r['peak_rss_mib']:.0f}"
        f" (+{r['peak_rss_mib'] - r['rss_start_mib']:.0f})"
        f" | {r['mutual_edges']:,} / {r['rank_order_edges']:,}"
        f" | {r['wse_iters']} | {r['num_clusters']} ({r['max_modularity']:.2f})"
        f" | {r['accuracy_noisy']:.3f} -> "
        f"{r['accuracy_reannotated']:.3f} | {r['device']} |")
  if len(rows) >= 2:
    ns = [r["n"] for r in rows]
    parts = [f"{s} {slope(ns, [r['times'][s] for r in rows]):.2f}"
             for s in STAGES]
    total = slope(ns, [sum(r["times"].values()) for r in rows])
    parts.append(f"total {total:.2f}")
    rss = slope(ns, [max(r["peak_rss_mib"] - r["rss_start_mib"], 1.0)
                     for r in rows])
    parts.append(f"peak RSS growth {rss:.2f}")
    lines.append("")
    lines.append("log-log slope of time vs N (1 = linear, 2 = quadratic): "
                 + ", ".join(parts))
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="1000,10000,100000,1000000",
                 help="comma-separated N")
  p.add_argument("--features", type=int, default=12)
  p.add_argument("--classes", type=int, default=6)
  p.add_argument("--knn_k", type=int, default=0,
                 help="0: scaled with N (reannotate.scaled_settings)")
  p.add_argument("--rank_k", type=int, default=0, help="0: scaled with N")
  p.add_argument("--candidates", default="",
                 help="comma-separated cluster counts; empty: scaled")
  p.add_argument("--form", default="normalized",
                 help="WSE form: normalized | matlab")
  p.add_argument("--init", default="labels", help="WSE start: labels | "
                 "random")
  p.add_argument("--vote", default="tree",
                 help="tree | absolute | plurality (reannotate.VOTES)")
  p.add_argument("--cut", default="min_size",
                 help="min_size (count clusters of >= --min_cluster_size "
                 "points) | count (reannotate.CUTS)")
  p.add_argument("--min_cluster_size", type=int, default=8)
  p.add_argument("--knn_method", default="auto",
                 help="exact | rp_forest | cells | auto "
                      "(graph.search_method: by backend and N)")
  p.add_argument("--knn_trees", type=int, default=8,
                 help="random-projection trees of the approximate search")
  p.add_argument("--dim", type=int, default=10)
  p.add_argument("--lam", type=float, default=2.0**-4,
                 help="WSE weak-label weight (accuracy, not time, depends "
                 "on it)")
  p.add_argument("--max_iter", type=int, default=50,
                 help="WSE iteration cap (tol 0: runs all of them)")
  p.add_argument("--stochastic_partitions", type=int, default=0,
                 help="> 0: the stochastic WSE (max_iter epochs)")
  p.add_argument("--tile_mb", type=int, default=256,
                 help="memory budget of one search / gather tile")
  p.add_argument("--repeat", type=int, default=2,
                 help="runs per stage; the table shows the last (steady)")
  p.add_argument("--repeat_max_n", type=int, default=100_000,
                 help="larger N run each stage once (time incl. compile)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--tracemalloc", action="store_true",
                 help="also report the Python-heap peak (slows host stages)")
  p.add_argument("--json_out", default=None, help="append rows as JSON lines")
  p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.n is not None:  # child: one size
    print("RESULT " + json.dumps(run_one(args)), flush=True)
    return
  rows = []
  for n in [round(float(s)) for s in args.sizes.split(",") if s]:
    cmd = [sys.executable, os.path.abspath(__file__), f"--n={n}"] + [
        a for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith("--sizes") and not a.startswith("--json_out")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
      print(f"N={n} failed ({time.perf_counter() - t0:.0f} s):\n"
            f"{proc.stderr[-3000:]}", file=sys.stderr)
      break
    row = json.loads(line[0][len("RESULT "):])
    rows.append(row)
    print(f"N={n:,}: {sum(row['times'].values()):.1f} s", file=sys.stderr,
          flush=True)
    if args.json_out:
      with open(args.json_out, "a") as f:
        f.write(json.dumps(row) + "\n")
  print(table(rows))


if __name__ == "__main__":
  main()
