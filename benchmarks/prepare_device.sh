#!/usr/bin/env bash
# Before a device lease, on this CPU machine (no device time): the wheels the
# device image lacks, for its Python (3.12, x86_64), into .whl/ (ignored by
# git; ~10 MB). Then, when a GPU is lent, name .whl in the run's carry:
#   bash benchmarks/prepare_device.sh
#   device run: bash benchmarks/device_session.sh "" "" "--budget_s=520"   (carry: [".whl"])
# The device has jax, flax, optax, orbax, torch, numpy, absl and the rest;
# grain, TFDS and ml_collections (and what only they need) travel. The
# synthetic sets are built on the device at first use (16 cores, under a
# minute each; a built set is 70 MB, over the 64 MiB a run may carry).
# Versions: CI's (.ci/constraints.txt). Checked at the end: every
# dependency of a carried wheel is carried or on the image (DEVICE_HAS).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${DEVICE_PYTHON:-3.12}
mkdir -p .whl
pins() { for p in "$@"; do
  grep -i "^${p}==" .ci/constraints.txt || { echo "$p: no pin in .ci/constraints.txt" >&2; exit 1; }
done; }
# What the device needs beyond its image (fer_jax's own dependencies that
# the image lacks, and theirs).
NEEDED="grain tensorflow-datasets ml-collections array-record dm-tree
immutabledict simple-parsing tensorflow-metadata termcolor toml
importlib-resources tensorboardX docstring-parser googleapis-common-protos
portpicker"
pip download -q --dest .whl --only-binary=:all: --no-deps \
  --python-version "$PY" --implementation cp --abi "cp${PY/./}" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  $(pins $NEEDED) 2>&1 | grep -v "^WARNING: Location" || true
# promise (TFDS) is published as source only: a pure-Python wheel built here.
pip wheel -q --no-deps --no-build-isolation -w .whl $(pins promise) 2>&1 \
  | grep -v "^WARNING: Location" || true
python3 - "$PY" <<'EOF'
"""Every unconditional dependency of a carried wheel (markers evaluated for
the device's Python on Linux) is carried or on the device image."""
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
# The device image's packages ('cuda', as read on a lent machine 2026-11-17).
DEVICE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal
annotated-doc anyio attrs botorch build certifi charset-normalizer chex
click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta
jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions
nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp""".split()
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
env = {"python_version": sys.argv[1], "python_full_version": sys.argv[1] + ".0",
       "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}
wheels = sorted(Path(".whl").glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels}
missing = set()
for w in wheels:
  with zipfile.ZipFile(w) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
      if not line.startswith("Requires-Dist:"):
        continue
      req = Requirement(line.split(":", 1)[1].strip())
      if req.marker is not None and not req.marker.evaluate(env):
        continue
      name = norm(req.name)
      if name not in carried and name not in map(norm, DEVICE_HAS):
        missing.add(f"{name} (for {w.name})")
size = sum(w.stat().st_size for w in wheels) / 2**20
print(f"prepare_device: {len(wheels)} wheels, {size:.1f} MiB in .whl/")
if missing:
  sys.exit("prepare_device: not carried and not on the device image: "
           + ", ".join(sorted(missing)))
EOF
