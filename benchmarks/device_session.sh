#!/usr/bin/env bash
# One device lease: install the carried wheels, then run the named parts.
#   carry: .whl (the wheels the device image lacks: made here beforehand by
#   bash benchmarks/prepare_device.sh); optionally .tfds (synthetic sets built
#   here; otherwise built on the device at first use)
#   bash benchmarks/device_session.sh "suite-args" "e2e-args" "side-by-side-args" "wsc-sizes"
# The third part (benchmarks/side_by_side.py: fer_jax against its PyTorch
# twins on this GPU) uses the image's own torch; pass "-" for its defaults.
# It rewrites the generated section of benchmarks/RESULTS.md, copied to $OUT.
# The fourth, the WSC scaling table alone on the lent GPU (issue 21):
#   bash benchmarks/device_session.sh "" "" "" 1000,10000,100000,1000000
# GroupGAN at the paper's batch 4, one fold against its 5 folds as one
# vmapped step (train.batch_folds; suite entries ...:folds5), same device:
#   bash benchmarks/device_session.sh "--only=groupgan --dtypes=bfloat16" "" "" ""
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export FER_JAX_DATA_DIR=$PWD/.tfds
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import jax, flax, optax, orbax.checkpoint, grain, ml_collections
import tensorflow_datasets
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
cd benchmarks
if [ -n "${1:-}" ]; then
  eval "python3 suite.py --out=$OUT/suite.jsonl $1" 2>&1 | grep -v "^W1\|^I1" | tee $OUT/suite.log
fi
# e2e runs: ";;"-separated argument sets, each a fresh workdir (the same
# config twice shows the second start loading its steps from the cache).
i=0
IFS=$'\n'
for args in $(echo "${2:-}" | sed 's/;;/\n/g'); do
  i=$((i+1))
  eval "python3 end_to_end.py --workdir=/tmp/e2e_$i $args" 2>&1 | grep -v "^W1\|^I1" | tee -a $OUT/e2e.log
done
if [ -n "${3:-}" ]; then
  args=$3
  [ "$args" = "-" ] && args=""
  # Records in /tmp: a second call on the same (warm) machine, e.g. with
  # "--passes=2 --only=...", adds to the same table.
  eval "python3 side_by_side.py --jsonl=/tmp/side_by_side.jsonl $args" 2>&1 | grep -v "^W1\|^I1" | tee $OUT/side_by_side.log
  cp RESULTS.md /tmp/side_by_side.jsonl /tmp/side_by_side.jsonl.log $OUT/
fi
# cGAN+WSC clustering at each N (comma-separated): k-NN search, WSE and
# rank-order distances on the device; linkage and modularity on the host.
if [ -n "${4:-}" ]; then
  python3 wsc_scaling.py --sizes="$4" --json_out=$OUT/wsc_scaling.jsonl 2>&1 \
    | grep -v "^W1\|^I1" | tee $OUT/wsc_scaling.log
fi
