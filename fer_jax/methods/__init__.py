"""One module per paper: how its networks train together.

The name -> class table lives in ``fer_jax.registry`` (below the config);
it is re-exported here for callers that think of it as the methods'.
"""

from __future__ import annotations

from fer_jax.registry import METHODS, method_class

__all__ = ["METHODS", "method_class"]
