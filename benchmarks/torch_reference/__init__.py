"""PyTorch twins of fer_jax's training steps, for the side-by-side benchmark
(``benchmarks/side_by_side.py``) and its CPU checks
(``tests/test_torch_reference.py``).

Each twin is built from the same fer_jax config as the step it mirrors and
trains the same networks (widths, image size, batch) with the same losses'
structure: ``nets`` holds the modules (NCHW, torch's idiom), ``steps`` the
training steps (forward, backward, optimizer update), ``flops`` the FLOP
count of a step with torch's ``FlopCounterMode``.

torch is a benchmark- and test-only dependency (the ``[torch]`` extra):
nothing under ``fer_jax/`` imports it or this package.
"""
