"""A trained run as a framework-neutral artefact: its predict function, with
the trained weights as constants, serialised as StableHLO by ``jax.export``.

  python -m fer_jax.export --workdir=workdirs/gndl --out_dir=exported/gndl

writes two files to --out_dir:
  model.jax_export  the serialised ``jax.export.Exported``: uint8 RGB faces
                    (N, S, S, 3), N any (a symbolic dimension), in; float32
                    class logits (N, K) out; resizing, centre cropping and
                    normalisation as the run's evaluation does them, inside.
  model.json        the class names (the logits' order), S, the alignment
                    the faces must have (fer_jax.faces.training_alignment:
                    eye distance and height as fractions of S), the
                    platforms it was lowered for, the run's method, step and
                    state digest.

``fer_jax.exported`` reloads and runs it with jax and numpy alone (no flax,
no fer_jax training code); any StableHLO consumer (IREE, XLA's PJRT, a
serving stack) can run ``Exported.mlir_module_serialized`` too.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from fer_jax import console
from fer_jax import files

ARTEFACT = "model.jax_export"
META = "model.json"
FORMAT = "fer_jax.export/1"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def export_model(model, out_dir: str, *,
                 platforms=DEFAULT_PLATFORMS) -> dict:
  """Exports a restored run (``fer_jax.evaluate.load``) to ``out_dir``;
  returns model.json's content. ValueError for a method without a
  classifier (``Model.require_classifier``)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from fer_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from fer_jax import faces  # pylint: disable=import-outside-toplevel
  model.require_classifier()
  spec = faces.training_alignment(model.config.data)
  size = spec.image_size
  # Host copies: the weights become constants of the module, not arguments
  # tied to this run's devices and mesh.
  state = jax.tree.map(np.asarray, jax.device_get(model.state))
  method, slot = model.method, model.slot

  def logits_fn(images):
    return method.predict(state, {slot: images}).astype(jnp.float32)

  (batch,) = jax.export.symbolic_shape("n")
  faces_in = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
  exported = jax.export.export(jax.jit(logits_fn),
                               platforms=tuple(platforms))(faces_in)
  meta = {
      "format": FORMAT,
      "artefact": ARTEFACT,
      "classes": list(model.classes),
      "input": {"dtype": "uint8", "shape": [None, size, size, 3],
                "channels": "RGB", "range": [0, 255],
                "description": "aligned faces (see alignment)"},
      "output": {"dtype": "float32", "shape": [None, len(model.classes)],
                 "description": "class logits, columns in classes order"},
      "alignment": {"image_size": size, "eye_distance": spec.eye_distance,
                    "eye_height": spec.eye_height,
                    "description": "similarity transform putting the eye "
                                   "centres level, eye_distance * image_size "
                                   "apart, their midpoint at x = "
                                   "(image_size - 1) / 2, y = eye_height * "
                                   "image_size (pixel centres at integers)"},
      "platforms": list(exported.platforms),
      "method": method.name, "step": model.step,
      "state_digest": ckpt_lib.state_digest(
          method.params_for_digest(model.state)),
      "workdir": model.workdir, "jax_version": jax.__version__,
      "calling_convention_version": exported.calling_convention_version,
  }
  files.makedirs(out_dir)
  files.write_bytes_atomic(files.join(out_dir, ARTEFACT),
                           bytes(exported.serialize()))
  files.write_json_atomic(files.join(out_dir, META), meta)
  return meta


# ------------------------------------------------------------------ command

def run():
  """The command line (flags defined here, so importing the API defines no
  absl flags: fer_jax.main and fer_jax.predict define --workdir too)."""
  workdir = flags.DEFINE_string("workdir", None, "The trained run's workdir.")
  out_dir_flag = flags.DEFINE_string(
      "out_dir", None, "Where to write model.jax_export and model.json "
      "(default: WORKDIR/export).")
  step = flags.DEFINE_integer("checkpoint_step", None, "The checkpoint to "
                              "export (default: the latest).")
  platforms = flags.DEFINE_list(
      "platforms", list(DEFAULT_PLATFORMS), "Platforms to lower for (cpu, "
      "cuda, rocm, tpu): the artefact runs on these only.")
  flags.mark_flags_as_required(["workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    console.quiet_info_logs()
    from fer_jax import evaluate  # pylint: disable=import-outside-toplevel
    from fer_jax.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
    out_dir = out_dir_flag.value or files.join(workdir.value, "export")
    try:
      model = evaluate.load(workdir.value, step.value)
      meta = export_model(model, out_dir, platforms=platforms.value)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
      print(f"fer_jax: error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"fer_jax: done: exported {meta['method']} step {meta['step']} "
          f"({len(meta['classes'])} classes, {meta['input']['shape'][1]} px "
          f"faces, for {', '.join(meta['platforms'])})\n"
          f"  artefact: {files.join(out_dir, ARTEFACT)}\n"
          f"  metadata: {files.join(out_dir, META)}\n"
          f"  reload:   fer_jax.exported.load({out_dir!r})")
    print(json.dumps({k: meta[k] for k in ("method", "step", "state_digest",
                                           "platforms")}))

  app.run(main)




if __name__ == "__main__":
  run()
