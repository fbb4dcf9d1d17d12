"""Training computes what it computed when benchmarks/state_digests.json
was recorded, to the last bit: each method's ``:tiny`` run ends in the
recorded state digest (on the recording platform; elsewhere skipped).

A change that fails here changes training's numbers. If it is meant to,
re-record (``python benchmarks/state_digests.py --record``) in the same
commit and say there which runs under docs/results it leaves unreproducible
(docs/results/README.md lists each run's commit)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "benchmarks"))
import state_digests  # pylint: disable=wrong-import-position

RECORD = state_digests.load_record()
# {field: (recorded, here)} where this host is not the recording one.
OTHER_PLATFORM = state_digests.platform_difference(RECORD)


def test_the_record_names_every_method_and_its_platform():
  assert set(RECORD["digests"]) == set(state_digests.METHODS)
  assert set(RECORD["platform"]) == set(state_digests.platform_key())


@pytest.mark.parametrize("method", state_digests.METHODS)
def test_tiny_run_ends_in_the_recorded_state(method, tmp_path, make_table):
  if OTHER_PLATFORM:
    pytest.skip(f"digests recorded on another platform: {OTHER_PLATFORM}")
  got = state_digests.digest(method, str(tmp_path), make_table)
  assert got == RECORD["digests"][method], (
      f"{method}'s :tiny run ends in state {got}, recorded "
      f"{RECORD['digests'][method]}: this change moves training's numbers. "
      "If it is meant to, run `python benchmarks/state_digests.py --record` "
      "and name in the commit the docs/results runs it leaves behind.")
