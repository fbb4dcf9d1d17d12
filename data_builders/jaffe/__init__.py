"""JAFFE from its distributed archive."""

from data_builders.jaffe.jaffe import Jaffe

__all__ = ["Jaffe"]
