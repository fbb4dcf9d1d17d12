"""Builds a data set's TFDS records (array_record) from its manual directory.

  python -m fer_jax.data.build fer_synth --data_dir=~/tensorflow_datasets
  python -m fer_jax.data.build ckplus --manual_dir=/data/CK+ --data_dir=...

The synthetic set needs no manual directory. The licensed sets read the
archive as its owner distributes it (see each builder's
MANUAL_DOWNLOAD_INSTRUCTIONS).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from fer_jax.data import registry

_MANUAL = flags.DEFINE_string("manual_dir", None,
                              "Where the downloaded archive was extracted.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Where to write the records (default: "
                                "$FER_JAX_DATA_DIR or ~/tensorflow_datasets).")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None,
                                      "Named builder config, if any.")


def build(name: str, manual_dir: str | None = None,
          data_dir: str | None = None, builder_config: str | None = None):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  cls = registry.builder_class(name)
  data_dir = os.path.expanduser(data_dir or registry.default_data_dir())
  kwargs = {"data_dir": data_dir}
  if builder_config:
    kwargs["config"] = builder_config
  builder = cls(**kwargs)
  config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  builder.download_and_prepare(file_format="array_record",
                               download_config=config)
  return builder


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give one data set name: "
                         + ", ".join(sorted(registry.BUILDERS)))
  try:
    builder = build(argv[1], _MANUAL.value, _DATA_DIR.value,
                    _BUILDER_CONFIG.value)
  except (ValueError, OSError, ImportError) as e:
    # OSError: the layout errors (FileNotFoundError) and a data dir that
    # cannot be written; ImportError: an optional decoder a builder needs
    # (MMI's PyAV), its message says what to install.
    print(f"fer_jax.data.build: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"built {builder.info.full_name} in {builder.data_dir}: "
        + ", ".join(f"{k}={v.num_examples}"
                    for k, v in builder.info.splits.items()))
  for key, counts in sorted((builder.info.metadata or {}).items()):
    if key.startswith("skipped_") and counts:  # the face builders' build log
      print(f"  {key[len('skipped_'):]}: skipped "
            + ", ".join(f"{n} {why}" for why, n in sorted(counts.items())))


if __name__ == "__main__":
  app.run(main)
