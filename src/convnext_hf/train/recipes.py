"""`--recipe` presets: the training settings of the ConvNeXt paper (Liu et al. 2022, Appendix A, Tables 5 and 6) and
the ImageNet-1K fine-tuning of FCMAE pre-trained ConvNeXt V2 models (Woo et al. 2023, facebookresearch/ConvNeXt-V2
TRAINING.md), and the paper's COCO detection fine-tuning (`paper-detection`, facebookresearch/ConvNeXt
object_detection).

A preset only changes defaults: any flag on the command line wins. The learning rates are the paper's for a total
batch of 4096 (training), 512 (fine-tuning) or 1024 (V2 fine-tuning); scale them linearly with your total batch
(per-device batch × devices × gradient accumulation).
"""

from __future__ import annotations

from typing import Any

from ..errors import UserInputError

# Shared by every paper recipe: AdamW (0.9, 0.999), cosine decay to 1e-6, no gradient clipping, label smoothing 0.1,
# RandAugment (9, 0.5), random erasing 0.25, random-resized crop and flip.
_PAPER_COMMON: dict[str, Any] = {
    "optim": "adamw_torch",
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr": 1e-6},
    "max_grad_norm": 0.0,
    "label_smoothing_factor": 0.1,
    "rand_augment": "rand-m9-mstd0.5-inc1",
    "random_erasing": 0.25,
    "rrc_scale_min": 0.08,
    "hflip": 0.5,
}

RECIPES: dict[str, dict[str, Any]] = {
    # Table 5, ImageNet-1K training from scratch: 300 epochs, 20 of warmup, Mixup/CutMix, EMA.
    "paper-in1k": {
        **_PAPER_COMMON,
        "learning_rate": 4e-3,
        "weight_decay": 0.05,
        "num_train_epochs": 300,
        "warmup_steps": 20 / 300,
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
        "model_ema": True,
        "model_ema_decay": 0.9999,
    },
    # Table 5, ImageNet-22K pre-training: 90 epochs, 5 of warmup, no EMA.
    "paper-in22k": {
        **_PAPER_COMMON,
        "learning_rate": 4e-3,
        "weight_decay": 0.05,
        "num_train_epochs": 90,
        "warmup_steps": 5 / 90,
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
        "model_ema": False,
    },
    # Table 6, fine-tuning an ImageNet-22K model: 30 epochs, no warmup, layer-wise decay 0.8, no Mixup/CutMix, a new
    # head initialized 1000× smaller.
    "paper-finetune": {
        **_PAPER_COMMON,
        "learning_rate": 5e-5,
        "weight_decay": 1e-8,
        "num_train_epochs": 30,
        "warmup_steps": 0,
        "layer_decay": 0.8,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "head_init_scale": 0.001,
        "model_ema": False,
    },
    # ConvNeXt V2, fine-tuning an FCMAE encoder (atto … nano) on ImageNet-1K: 600 epochs without warmup, base lr 2e-4
    # per 256 images, layer-wise decay 0.9 with every block its own layer ("single"), no Mixup/CutMix, label smoothing
    # 0.2, EMA; the new head starts 1000× smaller.
    "v2-finetune": {
        **_PAPER_COMMON,
        "learning_rate": 8e-4,
        "weight_decay": 0.05,
        "num_train_epochs": 600,
        "warmup_steps": 0,
        "layer_decay": 0.9,
        "layer_decay_type": "single",
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "label_smoothing_factor": 0.2,
        "head_init_scale": 0.001,
        "model_ema": True,
        "model_ema_decay": 0.9999,
    },
    # The paper's COCO fine-tuning (Table 3; facebookresearch/ConvNeXt object_detection/configs/convnext/
    # cascade_mask_rcnn_convnext_{tiny,small,base}_..._3x_coco_in1k.py): AdamW lr 2e-4 for a total batch of 16,
    # betas (0.9, 0.999), weight decay 0.05, layer-wise decay 0.7 (0.8 for base) with the `layer_wise` split, 36
    # epochs, 500 warmup iterations (mmdet's schedule_1x), no gradient clipping, flip 0.5, multi-scale training with
    # shorter sides 480-800 (×0.75-1.25 around this package's 640-pixel input) and random crops. The official
    # schedule steps the rate down ×0.1 at epochs 27 and 33, which the Trainer has no scheduler for: cosine instead.
    "paper-detection": {
        "optim": "adamw_torch",
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "learning_rate": 2e-4,
        "weight_decay": 0.05,
        "layer_decay": 0.7,
        "layer_decay_type": "detection",
        "num_train_epochs": 36,
        "warmup_steps": 500,
        "lr_scheduler_type": "cosine",
        "max_grad_norm": 0.0,
        "hflip": 0.5,
        "scale_range": [0.75, 1.25],
        "image_size": 640,
    },
}

# Table 5's stochastic depth, which grows with the model.
DROP_PATH_BY_VARIANT: dict[str, dict[str, float]] = {
    "paper-in1k": {"tiny": 0.1, "small": 0.4, "base": 0.5, "large": 0.5},
    "paper-in22k": {"tiny": 0.0, "small": 0.0, "base": 0.1, "large": 0.1, "xlarge": 0.2},
    "v2-finetune": {"v2-atto": 0.1, "v2-femto": 0.1, "v2-pico": 0.1, "v2-nano": 0.1},
    # The official COCO configs (see "paper-detection").
    "paper-detection": {"tiny": 0.4, "small": 0.6, "base": 0.7},
}
# Layer-wise decay that differs by model in a recipe: the official COCO config of base uses 0.8.
LAYER_DECAY_BY_VARIANT: dict[str, dict[str, float]] = {"paper-detection": {"base": 0.8}}


def recipe_defaults(recipe: str, variant: str | None = None) -> dict[str, Any]:
    """The argument defaults a recipe sets, with the paper's stochastic depth for `variant` when it gives one."""
    if recipe not in RECIPES:
        raise UserInputError(f"Unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}.")
    defaults = dict(RECIPES[recipe])
    drop_path = DROP_PATH_BY_VARIANT.get(recipe, {}).get(variant or "")
    if drop_path is not None:
        defaults["drop_path_rate"] = drop_path
    layer_decay = LAYER_DECAY_BY_VARIANT.get(recipe, {}).get(variant or "")
    if layer_decay is not None:
        defaults["layer_decay"] = layer_decay
    return defaults
