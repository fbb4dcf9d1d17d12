"""CK+ (Extended Cohn-Kanade) from its distributed archive."""

from fer_jax.data_builders.ckplus.ckplus import Ckplus, CkplusConfig

__all__ = ["Ckplus", "CkplusConfig"]
