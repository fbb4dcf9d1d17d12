"""AffectNet (manually annotated part) from its distributed archive."""

from data_builders.affectnet.affectnet import Affectnet, AffectnetConfig

__all__ = ["Affectnet", "AffectnetConfig"]
