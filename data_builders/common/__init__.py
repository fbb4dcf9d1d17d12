"""What every face-data-set builder shares: the feature schema and aligned
example (``builder``), finding files in the owner's layout (``reading``) and
counting what was skipped (``build_log``). Label maps live in
``fer_jax.data.classes.DATASET_CODES``, the alignment in
``fer_jax.data.align``."""

from data_builders.common.build_log import BuildLog
from data_builders.common.builder import FaceBuilder, FaceConfig, kept_frames
from data_builders.common.reading import (
    LayoutError,
    find_dir,
    find_root,
    open_image,
    read_floats,
    require_file,
)

__all__ = ["BuildLog", "FaceBuilder", "FaceConfig", "LayoutError",
           "find_dir", "find_root", "kept_frames", "open_image", "read_floats",
           "require_file"]
