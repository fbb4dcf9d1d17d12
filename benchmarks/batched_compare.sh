#!/usr/bin/env bash
# fer_jax.compare --batch_folds against separate runs on this machine (issue
# 19): GNDL's baseline and GroupGAN's CNN, 4 folds, seed 0, the two modes
# interleaved per arm, each compare with its own empty XLA compilation cache
# (HOME); then fold 2 of GNDL's baseline for 20 steps logged every step in
# both modes (where a batched fold and its separate run part).
#   bash benchmarks/batched_compare.sh OUT_DIR
# Times in OUT_DIR/log.txt (/usr/bin/time), runs in OUT_DIR/{batched,separate,drift}.
# Figures of 2026-12-06 (2-core CPU): benchmarks/RESULTS.md.
set -u
OUT=$(realpath -m "${1:?usage: batched_compare.sh OUT_DIR}")
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export FER_JAX_DATA_DIR=${FER_JAX_DATA_DIR:-$HOME/tensorflow_datasets}
{
git rev-parse HEAD
for arm in gndl/baseline groupgan/cnn; do
  m=${arm%/*}
  for mode in batched separate; do
    extra=""; [ $mode = batched ] && extra=--batch_folds
    home=$OUT/home_${mode}_${m}; mkdir -p "$home"
    echo "=== $arm $mode $(date -Is)"
    HOME=$home /usr/bin/time -f "wall %e s, user %U s, sys %S s, maxrss %M KB" \
      python -m fer_jax.compare --preset=cpu_all --methods=$m --arms=$arm \
      --seeds=0 $extra --workdir="$OUT/$mode" 2>&1 | grep -v "^WARNING\|Generat\|Shuffl"
  done
done
S="--set=train.num_steps=20 --set=train.log_every=1 --set=train.checkpoint_every=20"
python -m fer_jax.compare --preset=cpu_all --methods=gndl --arms=gndl/baseline \
  --seeds=0 --batch_folds $S --workdir="$OUT/drift" 2>&1 | grep "^compare"
python -m fer_jax.compare --preset=cpu_all --methods=gndl --arms=gndl/baseline \
  --seeds=0 --folds=2 $S --workdir="$OUT/drift" 2>&1 | grep "^compare"
python - "$OUT/drift/runs/gndl/baseline" <<'PY'
import json, sys
def losses(path):
  return {r["step"]: r["train/loss"] for r in map(json.loads, open(path))
          if "train/loss" in r}
a = losses(f"{sys.argv[1]}/seed0_batched/fold_2/metrics.jsonl")
b = losses(f"{sys.argv[1]}/fold2_seed0/metrics.jsonl")
for s in sorted(set(a) & set(b)):
  print(f"step {s}: batched {a[s]:.7f} separate {b[s]:.7f} "
        f"relative difference {abs(a[s] - b[s]) / abs(b[s]):.1e}")
PY
echo "=== end $(date -Is)"
} 2>&1 | tee "$OUT/log.txt"
