"""CK+ (Extended Cohn-Kanade) from its distributed archive."""

from data_builders.ckplus.ckplus import Ckplus, CkplusConfig

__all__ = ["Ckplus", "CkplusConfig"]
