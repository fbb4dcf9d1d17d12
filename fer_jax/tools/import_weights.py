"""Convert a torchvision ImageNet state dict to a fer_jax weights file.

  python -m fer_jax.tools.import_weights --arch=resnet101 \\
      --torch_state_dict=resnet101-63fe2227.pth --out=weights/resnet101.msgpack

Then start a method's backbone from it with ``--config.init_from=PATH``
(GNDL, IF-GAN and the baseline: ResNets; GroupGAN: its BaseNet). Archs:
resnet18/34/50/101, alexnet, vgg11/13/16/19 and their _bn variants. Needs
torch (``pip install 'fer_jax[torch]'``); torchvision is not needed: the
state dict is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import sys

from absl import app, flags

_ARCH = flags.DEFINE_string(
    "arch", None, "torchvision architecture of the state dict: resnet18, "
    "resnet34, resnet50, resnet101, alexnet, vgg11..vgg19, vgg11_bn..vgg19_bn.")
_STATE_DICT = flags.DEFINE_string(
    "torch_state_dict", None, "Path of the .pth state dict (as torchvision's "
    "model zoo downloads it, or torch.save(model.state_dict())).")
_OUT = flags.DEFINE_string("out", None, "Path of the Flax msgpack to write.")
flags.mark_flags_as_required(["arch", "torch_state_dict", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    print(f"fer_jax: error: reading a state dict needs torch ({e}); "
          "pip install 'fer_jax[torch]'", file=sys.stderr)
    sys.exit(2)
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  try:
    state_dict = torch_import.load_torch_file(_STATE_DICT.value)
    variables = torch_import.convert_and_save(state_dict, _ARCH.value,
                                              _OUT.value)
  except (OSError, ValueError, TypeError, RuntimeError) as e:
    print(f"fer_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=import-outside-toplevel
  n = sum(int(a.size) for a in jax.tree.leaves(variables))
  print(f"fer_jax: wrote {_OUT.value}: {_ARCH.value}, "
        f"{len(jax.tree.leaves(variables['params']))} param arrays and "
        f"{len(jax.tree.leaves(variables['batch_stats']))} BN statistics, "
        f"{n:,} values")


if __name__ == "__main__":
  app.run(main)
