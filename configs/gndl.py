"""GNDL (Wu et al. 2023) configs.

  --config=configs/gndl.py            synthetic set, trains on 2 CPU cores in minutes
  --config=configs/gndl.py:ckplus     the paper's CK+ setting (also :oulu_casia, :mmi)
  --config=configs/gndl.py:baseline   its baseline, the same ResNet-18 with plain CE
                                      (:baseline_ckplus etc. on the paper's data)
  --config=configs/gndl.py:oracle     the ceiling: the classifier sees F_exam - F_neu
                                      of the REAL neutral frame, in training and test
  --config=configs/gndl.py:tiny       a few steps on tiny faces (tests, smoke runs)
"""

from fer_jax import config_lib
from fer_jax.config_lib import base_config

# Paper settings (section 4.2): ResNet-18, 224x224, batch 128, Adam 1e-3,
# 150 epochs, lambda 5, 10-fold subject-independent, 3 peak frames + neutral.
PAPER_DATA = {
    "ckplus": "basic6+contempt",
    "oulu_casia": "basic6",
    "mmi": "basic6",
}


def get_config(arg: str = ""):
  baseline = arg.startswith("baseline")
  oracle = arg.startswith("oracle")
  preset = arg
  if baseline or oracle:
    preset = arg[len("baseline" if baseline else "oracle"):].lstrip("_")
  c = _gndl_config(preset)
  if baseline:
    # The paper's baseline: the same backbone, data, augmentation, optimizer
    # and steps, trained on the examined image alone with plain CE.
    c.method = "baseline"
    c.baseline = dict(island_weight=0.0, island_alpha=0.03)
  if oracle:
    # The ceiling: the classifier sees F_exam - F_neu of the real neutral
    # frame. L_neu (lam) only trains the NFG, which this arm does not use.
    c.gndl.neutral_source = "real"
    c.gndl.lam = 0.0
  return c


def _gndl_config(arg: str):
  c = base_config()
  c.method = "gndl"
  # l_neu_reduction 'mean' = nn.L1Loss (see fer_jax.losses.neutral_feature_loss).
  # neutral_loss_to_backbone: the paper trains end to end (True), from an
  # ImageNet ResNet-18. From scratch on the synthetic set L_neu can collapse
  # the features (F_exam = F_neu, deviation 0, CE stuck at log K for
  # hundreds of steps; docs/results); False lets L_neu train the NFG alone.
  # neutral_target_gradient: False stops L_neu's gradient at the target F_neu
  # (see GNDLNet.train_pair). neutral_source: 'generated' (the method) or
  # 'real' (the oracle arm). warmup_fraction: CE alone over that share
  # of the steps before L_neu joins (GNDL.phases: a stand-in for the paper's
  # ImageNet initialisation).
  c.gndl = dict(lam=5.0, negative_slope=0.01, l_neu_reduction="mean",
                neutral_loss_to_backbone=True, neutral_target_gradient=True,
                neutral_source="generated", warmup_fraction=0.0)
  if arg in PAPER_DATA:
    c.data.name = arg
    c.data.classes = PAPER_DATA[arg]
    c.data.resize = c.data.crop = 224
    c.data.noise_std = 0.02
    c.data.num_folds = 10
    c.model.base_width = 64
    c.train.batch_size = 128
    c.train.num_epochs = 150
    return c
  if arg == "tiny":
    return tiny(cpu_synthetic(c))
  if arg:
    raise ValueError(f"configs/gndl.py has no preset {arg!r}; presets: "
                     f"{', '.join(PAPER_DATA)}, tiny, none (synthetic), "
                     "baseline, oracle, or baseline_<preset>")
  return cpu_synthetic(c)


def cpu_synthetic(c):
  """The embedded default: small synthetic faces (the 'coupled' profile:
  eye-aligned, visible expressions, a peak plateau, inferable neutral), a
  narrow ResNet-18."""
  config_lib.synthetic(c)
  # 'coupled': the benchmark profile whose resting expression-like traits
  # follow from the rest of the face, so the neutral face can be inferred
  # from an expressive one (GNDL's premise; see fer_synth's Profile).
  c.data.synth.update(num_frames=12, profile="coupled")
  # From scratch the paper's L_neu (mean L1, lambda 5 from step 0) collapses
  # the features (docs/results: CE at log K for hundreds of steps). Here:
  # CE alone for the first 30% of the steps (the paper starts from
  # ImageNet) and L_neu relative to the neutral features' scale, which
  # shrinking them cannot lower. The
  # paper's literal loss is the compare's gndl_paper arm. Chosen on a
  # held-out synthetic population (docs/results/dev_synth_seed1).
  c.gndl.update(l_neu_reduction="relative", warmup_fraction=0.3)
  c.data.resize, c.data.crop = 64, 56
  c.data.noise_std = 0.02
  c.train.batch_size = 32
  c.optim.schedule = "cosine"
  # 1000 steps: on a held-out synthetic population (synth seed 1) the
  # baseline gains ~1 point from 1000 to 1500 and the oracle none.
  c.train.num_steps = 1000
  c.train.eval_every = 500
  return c


def tiny(c):
  """16 px faces, batch 8, 4 steps (tests/test_train.py's run)."""
  config_lib.tiny(c)
  c.gndl.warmup_fraction = 0.0  # one phase in a 4-step smoke run
  c.data.resize, c.data.crop = 16, 16
  c.train.update(batch_size=8, eval_batch_size=16, num_steps=4, log_every=2,
                 checkpoint_every=2)
  return c
