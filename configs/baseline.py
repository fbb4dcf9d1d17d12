"""The plain ResNet classifier (each paper's baseline), on GNDL's settings.

  --config=configs/baseline.py          synthetic, CPU-sized, same data as gndl.py
  --config=configs/baseline.py:ckplus   ResNet-18 + CE on CK+ (also :oulu_casia, :mmi)
  --config=configs/baseline.py:tiny     a few steps on tiny faces (tests, smoke runs)
"""

import os

from fer_jax.config_lib import load_config_module

_GNDL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gndl.py")


def get_config(arg: str = ""):
  c = load_config_module(_GNDL).get_config(arg)
  c.method = "baseline"
  del c["gndl"]
  return c
