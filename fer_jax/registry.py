"""Registry of methods: ``config.method`` -> Method class, by name.

It sits at the bottom of the package (strings, imported lazily), so the
config's validation can name the known methods without importing any, and
one method's dependencies never load for another.
"""

from __future__ import annotations

from fer_jax.imports import import_symbol

# name -> "module:Class".
METHODS = {
    "baseline": "fer_jax.methods.baseline:Baseline",
    "gndl": "fer_jax.methods.gndl:GNDL",
    "ifgan": "fer_jax.methods.ifgan:IFGAN",
    "groupgan": "fer_jax.methods.groupgan:GroupGAN",
    "cgan_wsc": "fer_jax.methods.cgan_wsc:CGANWSC",
    "sna": "fer_jax.methods.sna:SNA",
}


def method_class(name: str):
  if name not in METHODS:
    raise ValueError(f"config.method={name!r} is not a known method; known: "
                     f"{', '.join(sorted(METHODS))}")
  return import_symbol(METHODS[name])
