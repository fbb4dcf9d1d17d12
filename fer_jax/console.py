"""What the commands print: absl's INFO lines stay off the console.

Orbax and TFDS log every save, restore and open at INFO; the commands keep
the console for their progress, results, warnings and errors. Passing
``--verbosity`` (or ``-v``) on the command line keeps absl's own choice.
"""

from __future__ import annotations

import sys


def quiet_info_logs() -> bool:
  """absl logging at WARNING, unless the command line sets a verbosity;
  True when it did."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  if any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    return False
  logging.set_verbosity(logging.WARNING)
  return True
