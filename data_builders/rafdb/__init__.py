"""RAF-DB (basic emotions) from its distributed archive."""

from fer_jax.data_builders.rafdb.rafdb import Rafdb

__all__ = ["Rafdb"]
