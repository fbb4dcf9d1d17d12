"""AffectNet (manually annotated part) from its distributed archive."""

from fer_jax.data_builders.affectnet.affectnet import Affectnet, AffectnetConfig

__all__ = ["Affectnet", "AffectnetConfig"]
