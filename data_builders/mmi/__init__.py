"""MMI Facial Expression Database (video sessions) from its archive."""

from fer_jax.data_builders.mmi.mmi import Mmi, MmiConfig

__all__ = ["Mmi", "MmiConfig"]
