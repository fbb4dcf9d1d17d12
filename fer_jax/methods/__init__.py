"""Registry of methods: ``config.method`` -> Method class."""

from __future__ import annotations

from fer_jax.imports import import_symbol

# name -> "module:Class"; imported lazily so one method's deps stay its own.
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
