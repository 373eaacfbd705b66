"""Presets for every model, in one place: `smoke` (seconds, tests), `course` (CPU minutes), `workshop`
(about 10 GPU minutes per notebook), `full` (the paper).

    cfg = preset("baseline", "course", steps=200)    # {"model": {...}, "train": {...}, "data": {...}}

`model` is a config for `colorkit.models.build`, `train` the fields of `colorkit.train.TrainConfig`,
`data` the image size and how many training (None: all) and validation images. `full` holds the paper's own settings with
the section they come from; where a paper is silent, the value is ours. PAPER lists what each paper
states and OURS every other value of a `full` preset that changes the result, with the reason;
`preset(model, "full")` returns both ("paper", "ours"), `settings(cfg)` prints them, and
tests/test_presets.py holds the presets to them.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from colorkit.runs import PRESETS as PRESET_NAMES

# `workshop`: between `course` (CPU minutes) and `full` (GPU days). Each paper notebook sized for
# about 10 minutes on one H100/H200 on a real dataset (DATA="photos", or a fetched "imagenette" or
# "flowers"): 128-px images (the paper's 64 for Sun et al.'s coarse colorizer, 256 for its upgrader),
# widths between the two, a few thousand steps at the batch a GPU keeps busy, the whole training
# split. The sizes come from the reference throughputs of issue 17 (Swin-T 2162 images/s at 224 px,
# Zhang et al.'s network 740 at 256 px on an H200); they have not yet been timed on a GPU here
# (benchmarks/gpu_check.py does that). The engine's speed options stay off until that run shows
# what each gives.

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {
        "smoke": {
            "model": {"name": "baseline", "width": 8, "depth": 2, "image_size": 32, "features": "efficientnet-lite0",
                      "feature_size": 32, "fuse_width": 16},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 64, "val_images": 8},
        },
        # On the photo corpus (64 px, 96 validation crops of 62 photos, seed 0; measured 2026-11-29 on 2
        # cores with /tmp/tune-style runs of this preset): the CNN alone gained 0.20 dB over gray at 300
        # steps (colorfulness 12.7 of the photos' 41.4), 0.27 dB at 900 (15.4), 0.34 dB at 1200 (16.0).
        # With EfficientNet-Lite0's hypercolumn (stage2, 3, 5, 6): 0.94 dB at 600 steps with the network at
        # 96 px (23.5; 150 s), 1.05 dB at 128 px (23.4; 220 s), 0.88 dB at width 32 (347 s). Notebooks 03
        # and 04 train it for 150 steps.
        "course": {
            "model": {"name": "baseline", "width": 16, "depth": 3, "image_size": 64, "features": "efficientnet-lite0",
                      "feature_size": 96},
            "train": {"steps": 600, "batch_size": 24, "lr": 2e-3, "optimizer": "adam", "warmup_steps": 20,
                      "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 8192, "val_images": 96},
        },
        "workshop": {
            "model": {"name": "baseline", "width": 32, "depth": 3, "image_size": 128, "features": "efficientnet-lite0",
                      "feature_size": 160},
            "train": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 100,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
        },
        # The course's own network (no paper's): trained as Lakhani trains hers (sec. 3.4 and 4: 256 x 256 L
        # input, Adam with lr 1e-3, MSE on ab). Batch 32 and 100k steps (about 25 ImageNet epochs at batch
        # 32 would be 1M steps; 100k is where our runs level off) are our choice, as is the frozen
        # EfficientNet-Lite0 hypercolumn at its ImageNet size, 224.
        "full": {
            "model": {"name": "baseline", "width": 64, "depth": 3, "image_size": 256, "features": "efficientnet-lite0",
                      "feature_size": 224},
            "train": {"steps": 100_000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 1000,
                      "grad_clip": None, "schedule": "cosine", "ema_decay": 0.999, "val_every": 5000, "ckpt_every": 2000,
                      "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},   # None: the whole training split
        },
    },
    # Sun et al. step 1: the coarse colorizer (colorkit.models.sun2023).
    "sun2023": {
        "smoke": {
            "model": {"name": "sun2023", "dim": 16, "heads": 2, "image_size": 16},
            "train": {"steps": 3, "batch_size": 4, "lr": 3e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 16, "train_images": 32, "val_images": 4},
        },
        "course": {
            "model": {"name": "sun2023", "dim": 32, "heads": 2, "image_size": 64},
            "train": {"steps": 120, "batch_size": 8, "lr": 3e-3, "optimizer": "adam", "warmup_steps": 10,
                      "schedule": "cosine", "log_every": 10},
            "data": {"size": 64, "train_images": 2048, "val_images": 16},
        },
        "workshop": {
            "model": {"name": "sun2023", "dim": 256, "heads": 4, "encoder_depth": 2, "outer_depth": 2, "inner_depth": 2,
                      "image_size": 64},
            "train": {"steps": 4000, "batch_size": 32, "lr": 5e-4, "optimizer": "adam", "warmup_steps": 200,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 64, "train_images": None, "val_images": 64},
        },
        # Sun et al. sec. III: batch 4, RMSProp with lr 3e-4, 1.6 x 10^6 iterations, 64 x 64 images in
        # 3-bit color; EMA 0.999 of the weights for sampling as ColTran does. The paper gives no layer
        # sizes: ColTran's (Kumar et al. 2021: 512 channels, 4 heads, 4 encoder, 2 outer, 2 inner layers).
        "full": {
            "model": {"name": "sun2023", "dim": 512, "heads": 4, "encoder_depth": 4, "outer_depth": 2, "inner_depth": 2,
                      "mlp_ratio": 1, "image_size": 64},
            "train": {"steps": 1_600_000, "batch_size": 4, "lr": 3e-4, "optimizer": "rmsprop", "ema_decay": 0.999,
                      "schedule": "constant", "grad_clip": None,
                      "val_every": 10_000, "ckpt_every": 5_000, "log_every": 200, "num_workers": 4},
            "data": {"size": 64, "train_images": None, "val_images": 1000},
        },
    },
    # Sun et al. step 2: the upgrading network, a conditional GAN (colorkit.models.sun2023_upgrade).
    "sun2023_upgrader": {
        "smoke": {
            "model": {"name": "sun2023_upgrader", "width": 8, "n_res": 1, "image_size": 32, "coarse_size": 16},
            "train": {"steps": 3, "batch_size": 2, "lr": 2e-4, "betas": (0.0, 0.9), "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 16, "val_images": 4},
        },
        "course": {
            "model": {"name": "sun2023_upgrader", "width": 16, "n_res": 3, "image_size": 128, "coarse_size": 64},
            "train": {"steps": 120, "batch_size": 4, "lr": 2e-4, "betas": (0.0, 0.9), "optimizer": "adam", "log_every": 10},
            "data": {"size": 128, "train_images": 1024, "val_images": 12},
        },
        "workshop": {
            "model": {"name": "sun2023_upgrader", "width": 32, "n_res": 4, "image_size": 256, "coarse_size": 64},
            "train": {"steps": 2000, "batch_size": 8, "lr": 2e-4, "betas": (0.0, 0.9), "optimizer": "adam",
                      "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 256, "train_images": None, "val_images": 64},
        },
        # Sun et al. sec. III: batch 1, Adam beta = (0, 0.9), lr 2e-4, 2.6 x 10^6 iterations, lambda_r = 10,
        # 512 x 512 images from 64 x 64 coarse colors. Widths are ours (the paper's Fig. 5 gives none), as
        # is the critic's depth: 4 stride-2 layers see 142 x 142 patches, about a quarter of the 512-px side,
        # as the course's 34 x 34 patches are of 128 px (and pix2pix's 70 x 70 of 256 px).
        "full": {
            "model": {"name": "sun2023_upgrader", "width": 64, "n_down": 3, "n_res": 6, "image_size": 512, "coarse_size": 64,
                      "disc_layers": 4},
            "train": {"steps": 2_600_000, "batch_size": 1, "lr": 2e-4, "betas": (0.0, 0.9), "optimizer": "adam",
                      "schedule": "constant", "grad_clip": None, "val_every": 20_000, "ckpt_every": 5_000, "log_every": 500, "num_workers": 4},
            "data": {"size": 512, "train_images": None, "val_images": 1000},
        },
    },
    # Narkhede et al. (colorkit.models.narkhede): "train" is phase 1 (generator pretraining); "phases"
    # holds what phases 2 (critic pretraining) and 3 (GAN, TTUR) change; "gan" the GAN phase's settings.
    "narkhede": {
        "smoke": {
            "model": {"name": "narkhede", "width": 8, "depth": 3, "attention_scale": 4, "image_size": 32,
                      "critic_width": 8, "critic_layers": 3, "critic_attention_scale": 4},
            "train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 32, "val_images": 8},
            "phases": {"critic": {"steps": 2}, "gan": {"steps": 4, "schedule": "constant", "val_every": 2}},
            "gan": {"ttur": 4.0, "adv_weight": 0.1, "lr": 2e-4, "keep": 0.5},
        },
        "course": {
            "model": {"name": "narkhede", "width": 16, "depth": 4, "attention_scale": 8, "image_size": 64,
                      "critic_width": 32, "critic_layers": 3, "critic_attention_scale": 8},
            "train": {"steps": 300, "batch_size": 16, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 20,
                      "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 4096, "val_images": 48},
            "phases": {"critic": {"steps": 150, "warmup_steps": 0, "log_every": 10},
                       "gan": {"steps": 200, "warmup_steps": 0, "schedule": "constant", "val_every": 25,
                               "ckpt_every": 25, "log_every": 5}},
            "gan": {"ttur": 4.0, "adv_weight": 0.1, "lr": 2e-4, "keep": 0.5},
        },
        "workshop": {
            "model": {"name": "narkhede", "width": 32, "depth": 4, "attention_scale": 8, "image_size": 128,
                      "critic_width": 64, "critic_layers": 4, "critic_attention_scale": 8},
            "train": {"steps": 3000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 100,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
            "phases": {"critic": {"steps": 500, "warmup_steps": 0, "log_every": 50},
                       "gan": {"steps": 1500, "warmup_steps": 0, "schedule": "constant", "val_every": 250,
                               "ckpt_every": 250, "log_every": 50}},
            "gan": {"ttur": 4.0, "adv_weight": 0.1, "lr": 2e-4, "keep": 0.5},
        },
        # Narkhede et al. sec. 3: ImageNet, Adam, initial lr 2e-4 for G and D, so both run at 2e-4 in the GAN
        # phase too (ttur 1: two optimizers at the stated rate; the course preset's 4 is ours, SAGAN's ratio);
        # betas (0, 0.9) are SAGAN's. Widths, 256 x 256, batch and step counts are
        # ours (the paper gives none): 40k steps of pretraining G, 2k of D, a short GAN phase of 10k steps
        # with a snapshot every 500 (the paper: "after small window of time" D stops helping).
        "full": {
            "model": {"name": "narkhede", "width": 64, "depth": 4, "attention_scale": 8, "image_size": 256,
                      "critic_width": 64, "critic_layers": 4, "critic_attention_scale": 8},
            "train": {"steps": 40_000, "batch_size": 32, "lr": 2e-4, "optimizer": "adam", "warmup_steps": 500,
                      "grad_clip": None, "schedule": "cosine", "val_every": 5000, "ckpt_every": 2000, "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},
            "phases": {"critic": {"steps": 2000, "warmup_steps": 0, "schedule": "constant", "val_every": 0},
                       "gan": {"steps": 10_000, "warmup_steps": 0, "schedule": "constant", "val_every": 500,
                               "ckpt_every": 500, "log_every": 50}},
            "gan": {"ttur": 1.0, "adv_weight": 0.1, "lr": 2e-4, "keep": 0.5},
        },
    },
    # Lakhani (colorkit.models.lakhani). The global network is the ImageNet-trained EfficientNet-Lite0
    # (colorkit.pretrained) in place of the paper's Inception-ResNet-v2, its 1000 logits fused (Deep
    # Koalarization's choice). "classifier": how `pretrain_classifier` trains the SceneClassifier
    # stand-in when a notebook asks for global_source="scene" instead.
    "lakhani": {
        "smoke": {
            "model": {"name": "lakhani", "width": 4, "image_size": 32, "classifier_width": 4,
                      "global_input_size": 32},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 64, "val_images": 8},
            "classifier": {"steps": 4, "batch_size": 8, "lr": 1e-3},
        },
        # Ours: the course baseline's budget and data (300 steps, batch 24, 64 px) with the paper's Adam
        # at lr 1e-3, so the notebook compares the two at the same budget. The global network sees the
        # 64 px crop at 112 px, not its ImageNet 224 (a quarter of the compute; the crop holds 64 px of
        # detail either way), and global_cache computes it once per training crop, shared by the models.
        "course": {
            "model": {"name": "lakhani", "width": 16, "image_size": 64, "classifier_width": 16,
                      "global_input_size": 112, "global_cache": 8192},
            "train": {"steps": 300, "batch_size": 24, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 20,
                      "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 4096, "val_images": 96},
            "classifier": {"steps": 150, "batch_size": 32, "lr": 2e-3},
        },
        "workshop": {
            "model": {"name": "lakhani", "width": 32, "image_size": 128, "classifier_width": 32, "global_input_size": 224},
            "train": {"steps": 4000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 100,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
            "classifier": {"steps": 1000, "batch_size": 64, "lr": 1e-3},
        },
        # Lakhani sec. 3.1 and 4.1: 256 x 256 L input, Adam with lr 1e-3, MSE on ab, Xavier init in the
        # decoder; Deep Koalarization's widths (width 64: 28 x 28 x 256 at 224 input). The paper gives
        # no batch size, step count or schedule: batch 32, 100k steps, warmup + cosine and EMA are ours,
        # as for the baseline's full preset. The global network sees the whole image at 224 (its
        # ImageNet size). With Inception-ResNet-v2 exported to a file, set global_source="torchscript",
        # global_path=..., global_dim=1000: the paper's network, which it feeds 224 x 224 (sec. 3).
        "full": {
            "model": {"name": "lakhani", "width": 64, "image_size": 256, "classifier_width": 32,
                      "global_input_size": 224},
            "train": {"steps": 100_000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 1000,
                      "grad_clip": None, "schedule": "cosine", "ema_decay": 0.999, "val_every": 5000, "ckpt_every": 2000,
                      "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},   # None: the whole training split
            "classifier": {"steps": 5000, "batch_size": 64, "lr": 1e-3},
        },
    },
    # Jiang et al. (colorkit.models.jiang): automatic colorization (L alone), BaseNet (Zhang et al. 2017
    # without the hint input) with SMSA after conv5-7; "loss": alpha of the salient loss (eq. 7).
    "jiang": {
        "smoke": {
            "model": {"name": "jiang", "width": 4, "image_size": 32, "attention": "smsa"},
            "train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 32, "val_images": 8},
            "loss": {"alpha": 1.0},
        },
        # Ours: from scratch on a CPU the paper's lr 1e-5 (40K iterations at 256 px on a GPU) would barely
        # move in minutes; 2e-3 with warmup does.
        # Width 8 (an eighth of Zhang et al.'s) so that the notebook's eight models train in minutes.
        "course": {
            "model": {"name": "jiang", "width": 8, "image_size": 64, "attention": "smsa"},
            "train": {"steps": 200, "batch_size": 16, "lr": 2e-3, "optimizer": "adam", "warmup_steps": 10,
                      "schedule": "cosine", "log_every": 10},
            "data": {"size": 64, "train_images": 4096, "val_images": 48},
            "loss": {"alpha": 1.0},
        },
        "workshop": {
            "model": {"name": "jiang", "width": 32, "image_size": 128, "attention": "smsa"},
            "train": {"steps": 4000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 100,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
            "loss": {"alpha": 1.0},
        },
        # Jiang et al. sec. 3.2: 256 x 256 Lab images, Adam lr 1e-5, betas (0.9, 0.999), 40K iterations,
        # alpha = 1 (eq. 7), trained from scratch (the paper loads no weights). Zhang et al.'s widths
        # (width 64). Batch 16 is ours; the paper does not give it.
        "full": {
            "model": {"name": "jiang", "width": 64, "image_size": 256, "attention": "smsa"},
            "train": {"steps": 40_000, "batch_size": 16, "lr": 1e-5, "betas": (0.9, 0.999), "optimizer": "adam",
                      "grad_clip": None, "schedule": "constant", "val_every": 2000, "ckpt_every": 2000, "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},
            "loss": {"alpha": 1.0},
        },
    },
    # Zhang et al. 2017's user-guided network (colorkit.models.jiang.UserGuidedNet), the reference of
    # notebook 07: BaseNet's layout on [L; hints; mask], Huber loss, a geometric number of hints per
    # training image ("loss": their patch side). Its paper is not one of the course's five: "full"
    # trains it at Jiang et al.'s BaseNet settings, which is how the course's papers use it.
    "zhang2017": {
        "smoke": {
            "model": {"name": "zhang2017", "width": 4, "image_size": 32},
            "train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 32, "val_images": 8},
            "loss": {"hint_patch": 2},
        },
        # Ours: as Jiang et al.'s course preset (width 8, 2e-3 with warmup), 2 x 2 hints as in notebook 07.
        # The hint recipe and the budget come from `benchmarks/hint_ablation.py` (issue 15): at 200 steps
        # the network had not learned to spread hints; 800 steps with p = 1/20 (about 19 hints per
        # image) gained 3 dB from 10 hints but stayed below the mean hint color at 2 hints. The course
        # network therefore starts from the hints spread by distance (prior "spread", the course's
        # addition) and reads the mean hint color as a global hint (Zhang et al.'s global hints branch,
        # fed from the clicks): it corrects a classical guess instead of learning to spread from nothing.
        "course": {
            "model": {"name": "zhang2017", "width": 8, "image_size": 64, "global_hints": True, "prior": "spread"},
            "train": {"steps": 800, "batch_size": 16, "lr": 2e-3, "optimizer": "adam", "warmup_steps": 10,
                      "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 4096, "val_images": 48},
            "loss": {"hint_patch": 2, "hint_p": 1 / 20},
        },
        "workshop": {
            "model": {"name": "zhang2017", "width": 32, "image_size": 128},
            "train": {"steps": 4000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 100,
                      "schedule": "cosine", "ckpt_every": 500, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
            "loss": {"hint_patch": 2, "hint_p": 1 / 20},
        },
        "full": {
            "model": {"name": "zhang2017", "width": 64, "image_size": 256},
            "train": {"steps": 40_000, "batch_size": 16, "lr": 1e-5, "betas": (0.9, 0.999), "optimizer": "adam",
                      "grad_clip": None, "schedule": "constant", "val_every": 2000, "ckpt_every": 2000, "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},
            "loss": {"hint_patch": 3},
        },
    },
    # Li et al. (colorkit.models.li): the hierarchical DLSA transformer, T or S. "loss": hints per
    # training image (the paper's 10, or a (low, high) range), their patch (2 x 2) and the Huber delta.
    "li": {
        "smoke": {
            "model": {"name": "li", "arch": "T", "image_size": 32, "window": 4, "depths": [1, 1, 1, 1]},
            "train": {"steps": 3, "batch_size": 4, "lr": 2e-3, "optimizer": "adamw", "weight_decay": 0.05,
                      "schedule": "cosine", "log_every": 1},
            "data": {"size": 32, "train_images": 32, "val_images": 8},
            "loss": {"hints": 10, "hint_patch": 2, "delta": 1.0},
        },
        # Ours: Ours-T's widths and depths on 64 x 64 crops, where the stage-1 map is 16 x 16, so M = 4
        # (the paper's 7 tiles its 56 x 56 map). With the final BatchNorm (li.py's docstring) the model
        # learns to use hints, but only after a few hundred steps: 600 steps at lr 1e-3 with a geometric
        # number of hints (p = 1/20, as Zhang et al.'s network here) was the recipe that did in our runs;
        # at 300 steps, or at lr 2e-3, the hints still changed almost nothing. Even then it stayed below
        # the mean hint color, so the course model adds the full-resolution hint path on the hints spread
        # by distance (`li.HintPath`, hint_path "spread": the course's addition) and a Huber delta of 10
        # (the paper's 1 behaves like L1; PSNR scores squared errors): `benchmarks/hint_ablation.py`.
        "course": {
            "model": {"name": "li", "arch": "T", "image_size": 64, "window": 4, "hint_path": "spread"},
            "train": {"steps": 600, "batch_size": 16, "lr": 1e-3, "optimizer": "adamw", "weight_decay": 0.05,
                      "warmup_steps": 10, "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 4096, "val_images": 48},
            "loss": {"hints": 10, "hint_patch": 2, "delta": 10.0, "hint_p": 1 / 20},
        },
        "workshop": {
            "model": {"name": "li", "arch": "T", "image_size": 128, "window": 4},
            "train": {"steps": 8000, "batch_size": 64, "lr": 5e-4, "optimizer": "adamw", "weight_decay": 0.05,
                      "warmup_steps": 500, "schedule": "cosine", "ckpt_every": 1000, "log_every": 50, "num_workers": 4},
            "data": {"size": 128, "train_images": None, "val_images": 200},
            "loss": {"hints": 10, "hint_patch": 2, "delta": 1.0, "hint_p": 1 / 20},
        },
        # Li et al. sec. 4.3: 224 x 224 ImageNet, patch 4, Swin's window 7, AdamW lr 5e-4 with cosine
        # annealing, 10 random 2 x 2 hints, Huber delta = 1. Steps, batch, warmup and weight decay are
        # Swin's/ours; the paper gives none of them.
        "full": {
            "model": {"name": "li", "arch": "T", "image_size": 224, "window": 7},
            "train": {"steps": 100_000, "batch_size": 64, "lr": 5e-4, "optimizer": "adamw", "weight_decay": 0.05,
                      "warmup_steps": 2000, "grad_clip": None, "schedule": "cosine", "val_every": 5000, "ckpt_every": 5000,
                      "log_every": 100, "num_workers": 8},
            "data": {"size": 224, "train_images": None, "val_images": 1000},
            "loss": {"hints": 10, "hint_patch": 2, "delta": 1.0},
        },
    },
}


# ---------------------------------------------------------------------------------------------
# The `full` presets against the papers: what each paper states, and what we chose where it is silent
# ---------------------------------------------------------------------------------------------

# Training fields that change what a run learns; the engine's defaults fill those a preset leaves
# out, so a `full` preset's value of each is the paper's (PAPER) or ours (OURS), never silent.
RESULT_TRAIN_FIELDS = ("steps", "batch_size", "lr", "optimizer", "betas", "weight_decay", "warmup_steps", "schedule",
                       "min_lr_ratio", "grad_clip", "ema_decay", "amp")
# operational fields: when to log, validate and save, how to load data; they do not change the weights
OPERATIONAL_FIELDS = ("val_every", "ckpt_every", "log_every", "num_workers", "device", "seed", "pin_memory",
                      "compile", "channels_last", "device_cache")

# What each paper states (field: value); tests/test_presets.py checks every `full` preset against it.
# No paper clips gradients, so grad_clip None is each paper's setting.
PAPER: dict[str, dict[str, Any]] = {
    "baseline": {"source": "no paper's network: trained as Lakhani sec. 3.1, 4.1-4.2 trains hers",
                 "values": {"data.size": 256, "model.image_size": 256, "train.optimizer": "adam", "train.lr": 1e-3,
                            "train.grad_clip": None}},
    "sun2023": {"source": "Sun et al. sec. II.E, III (batch 4, RMSProp at one learning rate 3e-4, 1.6e6 iterations, "
                          "64 x 64, lambda_c = 0.99)",
                "values": {"data.size": 64, "model.image_size": 64, "model.decoder_weight": 0.99, "train.batch_size": 4,
                           "train.optimizer": "rmsprop", "train.lr": 3e-4, "train.steps": 1_600_000,
                           "train.schedule": "constant", "train.warmup_steps": 0, "train.grad_clip": None}},
    "sun2023_upgrader": {"source": "Sun et al. sec. III (batch 1, Adam betas (0, 0.9) at 2e-4, 2.6e6 iterations, 512 x 512 "
                                   "from 64 x 64 coarse colors)",
                         "values": {"data.size": 512, "model.image_size": 512, "model.coarse_size": 64,
                                    "train.batch_size": 1, "train.optimizer": "adam", "train.betas": (0.0, 0.9),
                                    "train.lr": 2e-4, "train.steps": 2_600_000, "train.schedule": "constant",
                                    "train.warmup_steps": 0, "train.grad_clip": None}},
    "narkhede": {"source": "Narkhede et al. sec. 3 (Adam, initial learning rate 2e-4 for G and D: the critic's "
                           "GAN-phase rate is ttur x lr, so ttur 1)",
                 "values": {"train.optimizer": "adam", "train.lr": 2e-4, "gan.lr": 2e-4, "gan.ttur": 1.0,
                            "model.spectral_norm": True, "train.grad_clip": None}},
    "lakhani": {"source": "Lakhani sec. 3.1, 3.2, 4.1 (256 x 256 L, the global network at 224 x 224, Adam at 1e-3)",
                "values": {"data.size": 256, "model.image_size": 256, "model.global_input_size": 224,
                           "model.fusion": True, "model.coords": True, "train.optimizer": "adam", "train.lr": 1e-3,
                           "train.grad_clip": None}},
    "jiang": {"source": "Jiang et al. sec. 2.3, 3.2 (256 x 256, Adam betas (0.9, 0.999) at 1e-5, 40K iterations, "
                        "alpha_1 = 1)",
              "values": {"data.size": 256, "model.image_size": 256, "train.optimizer": "adam", "train.lr": 1e-5,
                         "train.betas": (0.9, 0.999), "train.steps": 40_000, "train.schedule": "constant",
                         "train.warmup_steps": 0, "loss.alpha": 1.0, "model.attention": "smsa", "train.grad_clip": None}},
    "zhang2017": {"source": "Jiang et al. sec. 3.2, the settings at which they train BaseNet (Zhang et al. 2017); "
                            "Zhang et al.'s own paper is not among the course's five",
                  "values": {"data.size": 256, "model.image_size": 256, "train.optimizer": "adam", "train.lr": 1e-5,
                             "train.betas": (0.9, 0.999), "train.steps": 40_000, "train.schedule": "constant",
                             "train.warmup_steps": 0, "model.attention": None, "train.grad_clip": None}},
    "li": {"source": "Li et al. sec. 4.3 (224 x 224, patch 4, AdamW at 5e-4 with cosine annealing, 10 hints of 2 x 2; "
                     "Swin-T's configuration for Ours-T)",
           "values": {"data.size": 224, "model.image_size": 224, "model.arch": "T", "model.window": 7,
                      "train.optimizer": "adamw", "train.lr": 5e-4, "train.schedule": "cosine", "loss.hints": 10,
                      "loss.hint_patch": 2, "model.similarity": "brightness", "train.grad_clip": None}},
}

_BF16 = "bf16 autocast on CUDA: the course's choice for speed (the papers predate it or do not say)"
_DATA = "the whole training split and 1000 validation images: ours (the papers name the dataset, not the count)"
# What each `full` preset chooses where its paper is silent (field: why).
OURS: dict[str, dict[str, str]] = {
    "baseline": {"model.width": "ours", "model.depth": "ours", "model.features": "ours: the frozen ImageNet hypercolumn",
                 "model.feature_layers": "ours", "model.feature_size": "ours: the network's ImageNet size",
                 "model.fuse_width": "ours", "train.steps": "ours", "train.batch_size": "ours",
                 "train.betas": "Adam's defaults", "train.weight_decay": "none", "train.warmup_steps": "ours",
                 "train.schedule": "ours", "train.min_lr_ratio": "ours", "train.ema_decay": "ours", "train.amp": _BF16,
                 "data.train_images": _DATA, "data.val_images": _DATA},
    "sun2023": {"model.dim": "ColTran's (Kumar et al. 2021): Sun et al. give no layer sizes",
                "model.heads": "ColTran's", "model.encoder_depth": "ColTran's", "model.outer_depth": "ColTran's",
                "model.inner_depth": "ColTran's", "model.mlp_ratio": "ColTran's (ff_size 512 = hidden size 512)",
                "model.relative_bias": "ours", "model.decode": "ours: the decoder, greedy",
                "model.temperature": "ours", "model.sample_seed": "ours",
                "train.betas": "unused by RMSProp", "train.weight_decay": "none",
                "train.min_lr_ratio": "unused at a constant rate",
                "train.ema_decay": "ColTran's Polyak averaging (0.999)", "train.amp": _BF16,
                "data.train_images": _DATA, "data.val_images": _DATA},
    "sun2023_upgrader": {"model.width": "ours: Fig. 5 gives no widths", "model.n_down": "ours", "model.n_res": "ours",
                         "model.upsample": "ours", "model.residual": "ours: start from full L + coarse ab",
                         "model.disc_width": "ours", "model.disc_layers": "ours: 142-px patches, a quarter of 512 px",
                         "model.disc_spectral_norm": "ours (SAGAN's recipe with Adam betas (0, 0.9))",
                         "train.weight_decay": "none", "train.min_lr_ratio": "unused at a constant rate",
                         "train.ema_decay": "none", "train.amp": _BF16,
                         "data.train_images": _DATA, "data.val_images": _DATA},
    "narkhede": {"model.width": "ours", "model.depth": "ours", "model.attention_scale": "DeOldify's place (1/8)",
                 "model.image_size": "ours", "model.critic_width": "ours", "model.critic_layers": "ours",
                 "model.critic_attention_scale": "ours", "data.size": "ours: 256 (ImageNet-sized)",
                 "train.steps": "ours", "train.batch_size": "ours", "train.betas": "Adam's defaults in phase 1",
                 "train.weight_decay": "none", "train.warmup_steps": "ours", "train.schedule": "ours",
                 "train.min_lr_ratio": "ours", "train.ema_decay": "none", "train.amp": _BF16,
                 "phases.critic.steps": "ours", "phases.critic.warmup_steps": "ours", "phases.critic.schedule": "ours",
                 "phases.critic.val_every": "ours", "phases.gan.steps": "ours: a short window, as the paper observes",
                 "phases.gan.warmup_steps": "ours", "phases.gan.schedule": "ours",
                 "phases.gan.val_every": "ours: how often a snapshot is taken and scored",
                 "phases.gan.ckpt_every": "ours", "phases.gan.log_every": "ours",
                 "gan.adv_weight": "ours", "gan.keep": "ours: the snapshot rule's share",
                 "data.train_images": _DATA, "data.val_images": _DATA},
    "lakhani": {"model.width": "Deep Koalarization's widths", "model.classifier_width": "ours (the stand-in only)",
                "train.steps": "ours", "train.batch_size": "ours", "train.betas": "Adam's defaults",
                "train.weight_decay": "none", "train.warmup_steps": "ours", "train.schedule": "ours",
                "train.min_lr_ratio": "ours", "train.ema_decay": "ours", "train.amp": _BF16,
                "classifier.steps": "ours (the stand-in only)", "classifier.batch_size": "ours (the stand-in only)",
                "classifier.lr": "ours (the stand-in only)", "data.train_images": _DATA, "data.val_images": _DATA,
                "model.attention": "ours: Luong's score (notebook 05 compares Bahdanau's)",
                "model.attention_dim": "ours", "model.global_source": "ours: a network that ships offline",
                "model.global_network": "ours: EfficientNet-Lite0 in place of Inception-ResNet-v2 (set a file for the paper's)",
                "model.global_feature": "Deep Koalarization's: the 1000 logits", "model.global_classes": "unused (stand-in)",
                "model.global_path": "unused unless global_source is torchscript", "model.global_dim": "the logits' size",
                "model.global_cache": "off"},
    "jiang": {"model.width": "Zhang et al.'s widths",
              "train.batch_size": "ours", "train.weight_decay": "none", "train.min_lr_ratio": "unused at a constant rate",
              "train.ema_decay": "none", "train.amp": _BF16,
              "model.attention_after": "ours: which of Zhang et al.'s blocks get attention", "model.scales": "ours",
              "data.train_images": _DATA, "data.val_images": _DATA},
    "zhang2017": {"model.width": "Zhang et al.'s widths",
                  "train.batch_size": "ours", "train.weight_decay": "none", "train.min_lr_ratio": "unused at a constant rate",
                  "train.ema_decay": "none", "train.amp": _BF16, "loss.hint_patch": "ours (Zhang et al. use 1-9 px)",
                  "model.attention_after": "unused without attention", "model.scales": "unused without attention",
                  "model.global_hints": "off: the course's branch reads the mean hint color (Zhang et al.'s global hints "
                                        "network reads statistics a user gives, which the course's hints do not carry)",
                  "model.prior": "none: Zhang et al.'s network learns from the hints alone (the course preset starts "
                                 "from the hints spread by distance)",
                  "data.train_images": _DATA, "data.val_images": _DATA},
    "li": {"model.hint_path": "none: the paper's network (the course preset adds the hint path on the spread)",
           "model.hint_path_width": "unused without the hint path",
           "train.steps": "ours", "train.batch_size": "ours", "train.betas": "AdamW's defaults",
           "train.weight_decay": "Swin's (0.05)", "train.warmup_steps": "Swin's practice", "train.min_lr_ratio": "ours",
           "train.ema_decay": "none", "train.amp": _BF16, "loss.delta": "Huber's delta 1 (the paper's loss, delta not given)",
           "model.embed_dim": "None: Swin-T's, which the paper follows for Ours-T", "model.depths": "None: Swin-T's",
           "model.heads": "None: Swin-T's", "model.mlp_ratio": "Swin's (4)",
           "model.merge_reduction": "ours: no 1x1 reduction in patch merging (Swin's has one; Table 3 ablates it)",
           "model.stabilizer": "ours: a convolution (Table 3's Model 2)",
           "model.final_norm": "ours: a BatchNorm ends the encoder (the paper names no norm there; with Swin's "
                               "LayerNorm the model collapsed and ignored its hints, see colorkit/models/li.py)",
           "data.train_images": _DATA, "data.val_images": _DATA},
}


def flat_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A preset's result-relevant values as {"section.field": value}: every training field of
    RESULT_TRAIN_FIELDS (the engine's default where the preset leaves it out), every model and data
    field, and the nested sections (loss, gan, phases, classifier), operational fields left out."""
    from colorkit.train import TrainConfig

    defaults = TrainConfig(steps=1, batch_size=1).to_dict()
    out = {f"train.{k}": cfg["train"].get(k, defaults[k]) for k in RESULT_TRAIN_FIELDS}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif prefix.rsplit(".", 1)[-1] not in OPERATIONAL_FIELDS or prefix.startswith("phases."):
            out[prefix] = value

    from colorkit.models import resolved_config

    for section, value in cfg.items():
        if section not in ("train", "paper", "ours"):
            walk(section, resolved_config(value) if section == "model" else value)
    out.pop("model.name", None)
    return out


def preset(model: str, name: str, **train_overrides: Any) -> dict[str, Any]:
    """A deep copy of `model`'s preset `name`, with training fields overridden (e.g. steps=100).

    A `full` preset also carries "paper" (the source and the values the paper states) and "ours"
    (every other value that changes the result: field, value and why), so a notebook can print them
    beside the config and every run's config.json stores them.
    An unknown model, preset or training field is an error that lists the valid ones.
    """
    if model not in PRESETS:
        raise ValueError(f"no presets for model {model!r}; models with presets: {', '.join(sorted(PRESETS))}")
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(PRESET_NAMES)}")
    cfg = copy.deepcopy(PRESETS[model][name])
    from colorkit.train import TrainConfig  # the one list of valid training fields

    valid = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(train_overrides) - valid)
    if unknown:
        raise ValueError(f"unknown training parameter(s) {unknown}; valid ones: {', '.join(sorted(valid))}")
    cfg["train"].update({k: v for k, v in train_overrides.items() if v is not None})
    if name == "full":
        values = flat_fields(cfg)
        cfg["paper"] = copy.deepcopy(PAPER[model])
        cfg["ours"] = [{"field": field, "value": values.get(field), "why": why} for field, why in OURS[model].items()]
    return cfg


def settings(cfg: Mapping[str, Any]) -> str:
    """What a notebook prints beside its config: for a `full` preset the paper's source, the values
    it states and every value that is ours with the reason; for the others, one line saying they are not."""
    if "ours" not in cfg:
        return (f"{cfg['model']['name']}: a course-sized preset, not the paper's settings "
                "(PRESET='full' lists the paper's values and ours)")
    stated = ", ".join(f"{field} = {value!r}" for field, value in cfg["paper"]["values"].items())
    lines = [f"{cfg['model']['name']}: the paper's settings ({cfg['paper']['source']}): {stated}",
             "  ours, where the paper is silent:"]
    lines += [f"    {row['field']} = {row['value']!r}: {row['why']}" for row in cfg["ours"]]
    return "\n".join(lines)
