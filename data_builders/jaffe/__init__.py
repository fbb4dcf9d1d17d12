"""JAFFE from its distributed archive."""

from fer_jax.data_builders.jaffe.jaffe import Jaffe

__all__ = ["Jaffe"]
