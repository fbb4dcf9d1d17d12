"""The console of a training run (issue 22): one progress bar that the
run's own lines never land on, and (issue 17) the steps the non-finite
guard skipped shown in the bar."""

import contextlib
import io
import re

import jax.numpy as jnp
import tqdm

from fer_jax import checkpoint as ckpt_lib
from fer_jax import train

from test_train import tiny_config


@contextlib.contextmanager
def terminal():
  """stdout and stderr as one stream, as a terminal shows them (inside
  the test: pytest's capture resets sys.stdout after a fixture's setup)."""
  screen = io.StringIO()
  with contextlib.redirect_stdout(screen), contextlib.redirect_stderr(screen):
    yield screen


def _collisions(text: str) -> list[str]:
  """The run's lines ('fer_jax: ...') that start on a line holding other
  text already (a progress bar drawn with '\\r' and no newline)."""
  return [m.group(0) for m in re.finditer(r"[^\r\n]fer_jax: [^\r\n]*", text)]


def test_say_clears_the_bar_and_draws_it_again():
  with terminal() as screen:
    bar = tqdm.tqdm(total=4, mininterval=0, ascii=True)
    bar.update(1)
    ckpt_lib.say("fer_jax: hello")
    bar.update(1)
    bar.close()
  text = screen.getvalue()
  assert "\rfer_jax: hello\n" in text, repr(text)
  assert not _collisions(text), repr(text)
  # The bar comes back after the line.
  assert "2/4" in text.split("fer_jax: hello")[1]


def test_a_plain_print_would_collide():
  """The check above can fail: a print beside the bar lands on its line."""
  with terminal() as screen:
    bar = tqdm.tqdm(total=4, mininterval=0, ascii=True)
    bar.update(1)
    print("fer_jax: hello", flush=True)
    bar.close()
  assert _collisions(screen.getvalue())


def test_a_run_with_its_bar_prints_no_line_onto_it(fake_data, tmp_path):
  """A tiny run with the bar on: its phase, compile and evaluation lines
  (eval_every=2: one mid-run evaluation) each start a line of their own."""
  cfg = tiny_config(progress_bar=True, eval_every=2)
  cfg.data.val_folds = 1
  with terminal() as screen:
    train.Trainer(cfg, str(tmp_path), fake_data(cfg)).train()
  text = screen.getvalue()
  assert re.search(r"\rfer_jax: phase 'gndl' reads its frames", text), text
  assert re.search(r"\rfer_jax: step 2: val accuracy \d+\.\d%", text), text
  assert "4/4" in text  # the bar was drawn
  assert not _collisions(text), _collisions(text)


class _Bar:
  def __init__(self):
    self.postfix = []

  def set_postfix(self, **values):  # tqdm's keyword form
    self.postfix.append(dict(values))


class _Writer:
  def __init__(self):
    self.rows = []

  def write(self, step, scalars):
    self.rows.append((step, scalars))


def test_the_bar_counts_the_skipped_steps_of_the_phase():
  bar, writer = _Bar(), _Writer()
  log = train._LogWindows(writer, bar, "main", images_per_step=8,
                          window=10, max_skipped=1.0)
  step = 0
  for skipped in ([0, 0], [1, 0], [1, 1]):
    pending = [(1, {"loss": jnp.float32(1.0),
                    "skipped": jnp.float32(s)}) for s in skipped]
    step += len(skipped)
    log.close(step, pending, len(skipped))
  log.flush(final=True)
  assert [r[1]["train/skipped_steps"] for r in writer.rows] == [0, 1, 2]
  assert "skipped" not in bar.postfix[0]
  assert [p["skipped"] for p in bar.postfix[1:]] == [1, 3]
  assert bar.postfix[-1]["phase"] == "main"


def test_the_closing_summary_warns_of_skipped_steps(tmp_path):
  from fer_jax import main  # pylint: disable=import-outside-toplevel
  result = {"split": "test", "accuracy": 0.5, "method": "gndl", "fold": 0,
            "nonfinite_steps": 4}
  lines = main.closing_lines(result, str(tmp_path)).splitlines()
  assert lines[0] == "fer_jax: done: test accuracy 50.0% (gndl, fold 0)"
  assert lines[1].startswith("  warning:     4 training step(s) were "
                             "skipped as non-finite")
  result["nonfinite_steps"] = 0
  assert "warning" not in main.closing_lines(result, str(tmp_path))
