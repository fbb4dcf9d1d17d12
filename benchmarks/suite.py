"""Every benchmark entry in one process, as a markdown table for RESULTS.md.

  python benchmarks/suite.py [--only=gndl,ifgan] [--dtypes=float32,bfloat16]
      [--profile=gndl,ifgan --profile_root=DIR] [--deadline_s=500]
      [--ablate=gndl,ifgan,cgan_wsc]  (also bfloat16 with fast_layers off)

Entries are the throughput issue's settings (paper batch and image size per
method). One process keeps a device lease short: run it once per machine.
Entries run in order until ``--deadline_s``; the rest are listed as skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  pylint: disable=wrong-import-position
from profile_summary import format_summary  # noqa: E402  pylint: disable=wrong-import-position

from fer_jax.config_lib import load_config_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str  # method, for --only
  config: str  # file in configs/
  preset: str
  batch: int
  phase: str | None = None  # default: the method's last phase
  group: int = 1  # steps per dispatch (lax.scan)
  folds: int = 1  # folds' models trained by one vmapped step (batch_folds)
  overrides: tuple = ()  # (("data.resize", 128), ...)

  @property
  def label(self) -> str:
    return (f"{self.name}:{self.phase or 'last'}:b{self.batch}"
            f"{f':scan{self.group}' if self.group > 1 else ''}"
            f"{f':folds{self.folds}' if self.folds > 1 else ''}")


ENTRIES = (
    Entry("gndl", "gndl.py", "ckplus", 128),
    Entry("ifgan", "ifgan.py", "ckplus", 50),
    # The cGAN of the clustering method at the 128x128.
    Entry("cgan_wsc", "cgan_wsc.py", "ckplus", 64, phase="cgan",
          overrides=(("data.resize", 128), ("data.crop", 128))),
    # SNA's stage 4 (masked training with the AE's neighbours made inside
    # the step) at the paper's batch 63 (9 x 7 classes) and 252; the AE
    # refinement step (decoder + WGAN critic).
    Entry("sna", "sna.py", "affectnet", 63, phase="fer_sna"),
    Entry("sna", "sna.py", "affectnet", 252, phase="fer_sna"),
    Entry("sna", "sna.py", "affectnet", 64, phase="ae_refine"),
    # GroupGAN's 2V2 loop (D, D', G, E, C) at 128x128: batch 64 and the
    # paper's 4 (launch-bound: one dispatch per step, and a scan of 16).
    Entry("groupgan", "groupgan.py", "ckplus_oulu", 64),
    Entry("groupgan", "groupgan.py", "ckplus_oulu", 4),
    Entry("groupgan", "groupgan.py", "ckplus_oulu", 4, group=16),
    # Its 5 folds (sec. 4) at batch 4 as one vmapped step
    # (train.batch_folds): examples/s counts every fold's pairs.
    Entry("groupgan", "groupgan.py", "ckplus_oulu", 4, folds=5),
    Entry("groupgan", "groupgan.py", "ckplus_oulu", 4, group=16, folds=5),
)

_ONLY = flags.DEFINE_list("only", None, "Entry names to run (default all).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Dtypes.")
_STEPS = flags.DEFINE_integer("suite_steps", 20, "Timed steps per entry.")
_OUT = flags.DEFINE_string("out", None, "Append JSON lines here too.")
_PROFILE = flags.DEFINE_list("profile", [], "Entry names to also trace "
                             "(bfloat16 only) and summarise.")
_PROFILE_ROOT = flags.DEFINE_string("profile_root", "/tmp/fer_jax_profiles",
                                    "Where traces are written.")
_ABLATE = flags.DEFINE_list("ablate", [], "Entry names to also time "
                            "(bfloat16) with fer_jax.models.fast_layers off "
                            "(config.model.fast_layers=False): XLA's plain "
                            "lowering of the 7x7 ResNet stem (gndl), the U-Net's first "
                            "conv and last transposed conv and PatchGAN's "
                            "first conv (ifgan, cgan_wsc).")
_FLOPS_ONLY = flags.DEFINE_bool("flops_only", False, "Only count each "
                                 "entry's FLOPs per step, from its jaxpr "
                                 "(shapes only: no device, no compile).")
_DEADLINE = flags.DEFINE_float("deadline_s", 0.0, "Skip entries once this "
                               "many seconds have passed (0 = never).")


def config_for(entry: Entry, dtype: str, fast: bool = True):
  cfg = load_config_module(os.path.join(ROOT, "configs", entry.config)
                           ).get_config(entry.preset)
  cfg.model.dtype = dtype
  cfg.model.fast_layers = fast
  for path, value in entry.overrides:
    section, field = path.split(".")
    setattr(getattr(cfg, section), field, value)
  return cfg


def table(rows) -> str:
  head = ("| method | phase | batch | scan | folds | size | dtype | device "
          "| step ms "
          "| examples/s | images/s | compile s | GFLOP/step | TFLOP/s "
          "| util. | peak GB |")
  out = [head, "| --- " * 16 + "|"]
  for r in rows:
    util = f"{100 * r['utilisation']:.1f}%" if r["utilisation"] else "-"
    phase = r["phase"] + ("" if r.get("fast_layers", True) else
                          " (plain layers)")
    out.append(
        f"| {r['method']} | {phase} | {r['batch']} | {r['group']} | "
        f"{r.get('folds', 1)} | "
        f"{r['image_size']} | {r['dtype']} | {r['device']} | "
        f"{r['step_ms']:.2f} | {r['examples_per_sec']:.0f} | "
        f"{r['images_per_sec']:.0f} | {r['compile_s']:.1f} | "
        f"{r['gflops_per_step']:.1f} | {r['achieved_tflops']:.1f} | "
        f"{util} | {r['peak_mem_gb']:.1f} |")
  return "\n".join(out)


def flops_table() -> str:
  out = ["| entry | GFLOP/step |", "| --- | --- |"]
  for entry in ENTRIES:
    if _ONLY.value and entry.name not in _ONLY.value:
      continue
    f = throughput.step_flops(config_for(entry, "bfloat16"), entry.batch,
                              entry.phase)
    out.append(f"| {entry.label} | {f / 1e9:.1f} |")
    print(out[-1], flush=True)
  return "\n".join(out)


def main(argv):
  del argv
  if _FLOPS_ONLY.value:
    print("\n" + flops_table())
    return
  t_start = time.perf_counter()
  rows, skipped = [], []
  for entry in ENTRIES:
    if _ONLY.value and entry.name not in _ONLY.value:
      continue
    runs = [(d, True) for d in _DTYPES.value]
    if entry.name in _ABLATE.value:
      runs.append(("bfloat16", False))
    for dtype, fast in runs:
      label = f"{entry.label}:{dtype}{'' if fast else ':plain_layers'}"
      if _DEADLINE.value and time.perf_counter() - t_start > _DEADLINE.value:
        skipped.append(label)
        continue
      profile_dir = None
      if entry.name in _PROFILE.value and dtype == "bfloat16":
        profile_dir = os.path.join(_PROFILE_ROOT.value,
                                   label.replace(":", "_"))
      try:
        r = throughput.benchmark(config_for(entry, dtype, fast), entry.batch,
                                 entry.phase, steps=_STEPS.value,
                                 group=entry.group, profile_dir=profile_dir,
                                 folds=entry.folds)
      except Exception as e:  # pylint: disable=broad-except
        print(f"suite: {label} failed: {type(e).__name__}: {e}", flush=True)
        skipped.append(f"{label} (failed)")
        continue
      r["fast_layers"] = fast
      rows.append(r)
      if r["profile"]:
        print(f"profile {label}:\n{format_summary(r['profile'])}",
              flush=True)
      print(json.dumps({k: v for k, v in r.items() if k != "profile"}),
            flush=True)
      if _OUT.value:
        with open(_OUT.value, "a") as f:
          f.write(json.dumps(r) + "\n")
  print("\n" + table(rows))
  if skipped:
    print("\nskipped: " + ", ".join(skipped))


if __name__ == "__main__":
  app.run(main)
