"""What every face-data-set builder shares: the feature schema and aligned
example (``builder``), finding files in the owner's layout (``reading``) and
counting what was skipped (``build_log``). Label maps live in
``fer_jax.data.classes.DATASET_CODES``, the alignment in
``fer_jax.data.align``."""

from fer_jax.data_builders.common.build_log import BuildLog, logger
from fer_jax.data_builders.common.builder import (FaceBuilder, FaceConfig,
                                                  kept_frames)
from fer_jax.data_builders.common.reading import (
    IMAGE_EXTENSIONS,
    LayoutError,
    Part,
    check_manual_dir,
    child,
    find_dir,
    find_layout,
    find_root,
    find_root_where,
    list_images,
    open_image,
    packed_archives,
    read_floats,
    require_file,
    resolve,
    unpack_hint,
)

__all__ = ["IMAGE_EXTENSIONS", "BuildLog", "FaceBuilder", "FaceConfig",
           "LayoutError", "Part", "check_manual_dir", "child", "find_dir",
           "find_layout", "find_root", "find_root_where", "kept_frames",
           "list_images", "logger", "open_image", "packed_archives",
           "read_floats", "require_file", "resolve", "unpack_hint"]
