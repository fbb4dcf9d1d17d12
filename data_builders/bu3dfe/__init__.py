"""BU-3DFE (2D texture images) from its distributed archive."""

from fer_jax.data_builders.bu3dfe.bu3dfe import Bu3dfe, Bu3dfeConfig

__all__ = ["Bu3dfe", "Bu3dfeConfig"]
