"""GroupGAN (Niu et al. 2022) configs.

  --config=configs/groupgan.py              synthetic set, 2V2, trains on 2 CPU cores in minutes
  --config=configs/groupgan.py:ckplus_oulu  the paper's mixed CK+ and Oulu-CASIA protocol
  --config.groupgan.variant=cnn|dcgan|1v2|2v2   the Table 1 columns
  --config.basenet=vgg13 (alexnet, vgg11..19, resnet18/34/50)   the Table 1 rows
  --config=configs/groupgan.py:tiny         a few steps on tiny faces (tests, smoke runs)
"""

from fer_jax import config_lib
from fer_jax.config_lib import base_config


def groupgan_fields():
  return dict(
      variant="2v2",
      # Sec. 4.2: "hyper-parameters for adversarial learning are 2e-3";
      # gamma_G weighs C's cross-entropy in G's loss (eq. 6).
      alpha_g=2e-3, beta_g=2e-3, gamma_g=1.0, alpha_e=2e-3, beta_e=2e-3,
      dprime_weak_negatives=True,  # D' also sees real weak faces as negatives
      fc_width=512,  # the BaseNets' FC layers, reduced from 4096 (sec. 4.3)
      dropout=0.5,
      # E's and C's learning rate (Algorithm 1's rho_E; the classifier's);
      # 0 = optim.lr, which G, D and D' use.
      basenet_lr=0.0,
      init="paper",  # N(0, 0.01) weights, biases 1 (sec. 4.2) | default
      g_features=(64, 128, 256, 512),
      g_strides=(2, 2, 2, 2),  # 128 px -> an 8x8 bottleneck
      g_residual=False,  # True: G adds a change to its input (not the paper)
      # Decoder upsampling: "transpose" (the paper's deconvolutions) or
      # "resize" (nearest-neighbour + 3x3 conv: no checkerboard; not the paper).
      g_upsample="transpose",
      # Weight of an L1 penalty on G's change |G(weak) - weak| in G's loss
      # (0 = the paper's eq. 6).
      g_change_l1=0.0,
      # Eq. 12's content term: "mean" per element (eq. 1's "MSE loss", as
      # torch's MSELoss) or "sum", the squared L2 norm per image as eq. 12
      # prints it (H x W x C times larger: it then outweighs C's cross-entropy
      # in G's loss instead of the reverse).
      content_reduction="mean",
      # GANimation's attention (not the paper): G also outputs a mask A in
      # [0, 1] and its face is A * colour + (1 - A) * weak; G's loss adds
      # g_attention_l1 * mean(A) + g_attention_tv * TV(A) (the squared
      # differences of adjacent mask values, summed per image), so that G
      # changes the face in a few connected regions (issue 16).
      g_attention=False, g_attention_l1=0.1, g_attention_tv=1e-3,
      d_features=(64, 128, 256, 256), d_fc_width=256,
      # Algorithm 1's pre-training: E on peak frames, G as an autoencoder of
      # faces of `autoencoder_role`. *_steps > 0 overrides *_epochs.
      extractor_epochs=10.0, extractor_steps=0,
      autoencoder_epochs=10.0, autoencoder_steps=0, autoencoder_role="all",
  )


def get_config(arg: str = ""):
  c = base_config()
  c.method = "groupgan"
  c.groupgan = groupgan_fields()
  # `--config.basenet=vgg13` names the BaseNet; model.arch follows it.
  c.basenet = "vgg13"
  c.model.arch = c.get_ref("basenet")
  # Weak = frames 6-8, peak = the last frame; evaluation on the weak frames.
  c.data.role = "weak"
  c.data.weak_frames = (6, 8)
  c.data.peak_frames = 1
  c.data.fold_by = "sequence"  # "sequences divided into 5 groups"
  c.data.num_folds = 5
  c.data.classes = "basic6"
  if arg == "ckplus_oulu":
    paper(c)
  elif arg == "tiny":
    tiny(cpu_synthetic(c))
  elif arg:
    raise ValueError(f"configs/groupgan.py has no preset {arg!r}; presets: "
                     "ckplus_oulu, tiny, or none (synthetic)")
  else:
    cpu_synthetic(c)
  return c


def paper(c):
  """Sec. 4: CK+ and Oulu-CASIA (VL, normal light) mixed, 5-fold by
  sequence groups; 144 resize, 128 random crop, flip; batch 4; SGD momentum
  0.9, weight decay 5e-3, lr 1e-4 dropping to 1e-5 on a loss plateau."""
  c.data.name = "ckplus+oulu_casia"
  c.data.resize, c.data.crop = 144, 128
  c.model.base_width = 64
  c.optim.update(name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-3,
                 schedule="plateau", decay_factor=0.1, plateau_min_scale=0.1,
                 plateau_window=200, plateau_patience=5)
  c.train.batch_size = 4
  c.train.eval_batch_size = 64
  c.train.num_epochs = 50


def cpu_synthetic(c):
  """Small synthetic faces and narrow nets that train from scratch: He init
  and Adam (the paper's N(0, 0.01) init and SGD at 1e-4 assume BaseNets that
  start from ImageNet weights), a width-16 ResNet-18 BaseNet
  (`--config.basenet=vgg13_bn` for the paper's best).

  E and C (the BaseNets) at Adam 3e-4 without dropout, G and D at 1e-3:
  with Adam 1e-3 and torchvision's dropout 0.5 in its 256-wide FC head,
  VGG13-BN never left chance on the peak frames (loss ln 6 for 1500 steps,
  most of its last FC's units dead; lr 1e-4, He-init FCs or SGD did not
  help), so every GAN variant, whose C starts from that E, predicted one
  class. At 3e-4 without dropout it reaches 52% training accuracy in 400
  steps (dropout 0.5 alone holds it at chance to ~400). The paper names
  no dropout; Algorithm 1 gives each part its own learning rate."""
  config_lib.synthetic(c)
  # The benchmark profile: eye-aligned faces whose weak frames (6-8 of 12)
  # sit at ~0.17-0.47 of a visible peak, so there is an expression to
  # magnify (on the 'classic' faces a weak frame moved ~0.3 px).
  c.data.synth.update(num_frames=12, profile="benchmark")
  c.data.num_folds = 5  # the paper's five groups, of subjects here (below)
  c.data.resize, c.data.crop = 72, 64
  # Folds by subject, not by sequence: every synthetic subject has exactly
  # one sequence per expression, so with sequence folds a test sequence's
  # expression is the one expression its subject never shows in training,
  # and a net that partly recognises identity is pushed off the right
  # class (measured: the CNN variant at 1.8% with an empty diagonal).
  c.data.fold_by = "subject"
  c.basenet = "resnet18"
  # The paper's strides (2, 2, 2, 2): a 4x4 bottleneck on 64 px faces.
  # (Strides (1, 2, 2, 2) keep the paper's 8x8 bottleneck of 128 px faces
  # but cost 3.3x the multiply-adds: VGG13-BN 2V2 then took 1025 s on the
  # 2 shared cores, over the 10-minute budget.) Residual G: a plain G's reconstructions lose the
  # expression in this budget (MSE to the peak 0.17 where the weak frame
  # itself is at 0.004), so here G learns the change from weak to peak.
  # Resize-conv upsampling in G: no checkerboard, and its forward and
  # backward 2.3x faster on XLA:CPU than the transposed convs'.
  # No autoencoder pre-training: a residual G starts as the identity, which
  # is already the autoencoder's optimum (its loss is 0 from step 1).
  c.groupgan.update(init="default", fc_width=256, dropout=0.0,
                    basenet_lr=3e-4,
                    g_features=(16, 32, 64, 128),
                    g_strides=(2, 2, 2, 2), g_residual=True,
                    g_upsample="resize",
                    d_features=(16, 32, 64, 64), d_fc_width=128,
                    extractor_epochs=0, extractor_steps=600,
                    autoencoder_epochs=0, autoencoder_steps=0)
  c.optim.update(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                 schedule="cosine")
  # Eq. 12's content term as printed, a squared norm per image: with the
  # per-element mean, C's cross-entropy dominates G's loss and G tints the
  # whole face (change-map r 0.12 on the development fold); summed, G's
  # change sits at the mouth, brows and eyes (r 0.36) (README, issue 16).
  c.groupgan.content_reduction = "sum"
  c.train.batch_size = 16
  # 800 main-phase steps. Both choices were made on the development
  # population (synth seed 1, fold 0 of 5; docs/results/dev_synth_seed1):
  # 'mean' 35.8% at 500 steps and 38.9% at 800, 'sum' 41.7% at 800.
  c.train.num_steps = 800
  return c


def tiny(c):
  """32 px faces, a width-8 VGG11-BN BaseNet, the paper's plain G (a
  residual G starts with a zero last layer, so no gradient would reach E
  through it on the first step), SGD, 2 steps per phase
  (tests/test_groupgan.py)."""
  config_lib.tiny(c)
  c.data.resize, c.data.crop = 32, 32
  c.data.rotate_deg = 0.0
  c.basenet = "vgg11_bn"
  c.groupgan.update(fc_width=16, g_features=(4, 8, 8, 8),
                    d_features=(4, 8, 8, 8), d_fc_width=8, extractor_steps=2,
                    autoencoder_steps=2, g_residual=False,
                    # A plain G under SGD: the summed content term's
                    # gradient (H x W x C times the mean's) would swamp it.
                    content_reduction="mean")
  c.optim.update(name="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
                 schedule="constant")
  c.train.update(batch_size=4, eval_batch_size=8, num_steps=2, log_every=1,
                 checkpoint_every=1)
  return c
