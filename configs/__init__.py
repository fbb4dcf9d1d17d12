"""The method configs, one file per method with ``get_config(arg)``.

Installed as ``fer_jax.configs``. ``--config=`` takes a file path or a
config's name (``--config=gndl``, ``--config=gndl.py:ckplus``); see
``fer_jax.config_lib.config_file``.
"""
