"""Oulu-CASIA NIR&VIS from its distributed archive."""

from fer_jax.data_builders.oulu_casia.oulu_casia import (OuluCasia,
                                                          OuluCasiaConfig)

__all__ = ["OuluCasia", "OuluCasiaConfig"]
