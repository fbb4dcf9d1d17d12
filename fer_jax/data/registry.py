"""Where each data set's TFDS builder lives, and how to build it.

Builders live in the repository's top-level ``data_builders/<name>/``,
installed (and, from a source checkout, imported: see ``fer_jax/__init__.py``)
as ``fer_jax.data_builders.<name>``. Only the synthetic
set builds itself; the licensed sets need the user's archive (``--manual_dir``).
"""

from __future__ import annotations

import os

from fer_jax.imports import import_symbol

# name -> "module:Class".
BUILDERS: dict[str, str] = {
    "fer_synth": "fer_jax.data_builders.fer_synth:FerSynth",
    "ckplus": "fer_jax.data_builders.ckplus:Ckplus",
    "oulu_casia": "fer_jax.data_builders.oulu_casia:OuluCasia",
    "mmi": "fer_jax.data_builders.mmi:Mmi",
    "jaffe": "fer_jax.data_builders.jaffe:Jaffe",
    "bu3dfe": "fer_jax.data_builders.bu3dfe:Bu3dfe",
    "rafdb": "fer_jax.data_builders.rafdb:Rafdb",
    "affectnet": "fer_jax.data_builders.affectnet:Affectnet",
}

# The synthetic set is built at any size (config.data.synth), through this
# function of its builder package: (data_dir, **synth fields) -> builder.
SYNTH_SIZED_BUILDER = "fer_jax.data_builders.fer_synth:sized_builder"

DEFAULT_DATA_DIR_ENV = "FER_JAX_DATA_DIR"


def default_data_dir() -> str:
  """$FER_JAX_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.path.expanduser(os.environ.get(DEFAULT_DATA_DIR_ENV)
                            or os.path.join("~", "tensorflow_datasets"))


def builder_class(name: str):
  if name not in BUILDERS:
    raise ValueError(f"config.data.name={name!r} is not a known data set; "
                     f"known: {', '.join(sorted(BUILDERS))}")
  return import_symbol(BUILDERS[name])


def synth_builder(data_dir: str, synth) -> "tfds.core.DatasetBuilder":  # noqa: F821
  """fer_synth's builder at the size ``synth`` (config.data.synth) gives."""
  return import_symbol(SYNTH_SIZED_BUILDER)(data_dir, **dict(synth))


def build_command(name: str, data_dir: str, builder_config: str = "") -> str:
  """The command that builds ``name`` (its ``builder_config``, if a preset
  names one) into ``data_dir``, for error messages (it names the config
  field, so the user sees which setting asked for it)."""
  config = f" --builder_config={builder_config}" if builder_config else ""
  asked = (f"config.data.name={name!r}" + (
      f", data.builder_config={builder_config!r}" if builder_config else ""))
  return (f"python -m fer_jax.data.build {name}{config} "
          f"--manual_dir=PATH/TO/ARCHIVE --data_dir={data_dir}   # the set "
          f"{asked} reads; see its MANUAL_DOWNLOAD_INSTRUCTIONS")
