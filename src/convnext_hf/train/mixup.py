"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on training batches, with label-smoothed soft targets.

As in the ConvNeXt recipe, every batch is mixed with itself reversed: Mixup blends whole images, CutMix pastes a
rectangle, and the targets mix in proportion to the pixels each image contributes. Multi-label targets (multi-hot
rows) mix the same way, label by label, after each binary target is smoothed towards 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserInputError


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with `smoothing` of the mass spread uniformly over all classes (rows sum to one)."""
    off_value = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off_value, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off_value)


def smooth_multi_hot(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-hot targets with each binary target moved `smoothing` of the way towards 1/2 (1 → 1 - s/2, 0 → s/2)."""
    return targets.float() * (1.0 - smoothing) + smoothing / 2


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability distribution per example, averaged over the batch (in fp32)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A (top, bottom, left, right) box covering about 1 - lam of the image, centred uniformly, clipped to it."""
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    center_y = int(torch.randint(height, ()).item())
    center_x = int(torch.randint(width, ()).item())
    top, bottom = max(center_y - cut_h // 2, 0), min(center_y + cut_h // 2, height)
    left, right = max(center_x - cut_w // 2, 0), min(center_x + cut_w // 2, width)
    return top, bottom, left, right


@dataclass(frozen=True)
class Mixup:
    """Mix a batch and build its soft targets.

    With probability `probability` a batch is mixed: by CutMix with probability `switch_probability` when both are
    enabled, else by the enabled one. lam ~ Beta(alpha, alpha). With both alphas 0 it only smooths the labels.
    """

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    probability: float = 1.0
    switch_probability: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        # A single class (a one-class detector) has nothing to mix or smooth, which is fine unless asked to.
        if self.num_classes < 2 and (self.mixes or self.label_smoothing > 0):
            raise UserInputError(f"num_classes must be at least 2 to mix labels, got {self.num_classes}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise UserInputError(
                f"mixup_alpha and cutmix_alpha must be >= 0 (0 disables), got {self.mixup_alpha}, {self.cutmix_alpha}."
            )
        for name in ("probability", "switch_probability", "label_smoothing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserInputError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is enabled at all."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.probability > 0

    def _sample(self) -> tuple[float, bool]:
        """Draw (lam, use_cutmix) for one batch; lam = 1 leaves it unmixed."""
        if not self.mixes or torch.rand(()).item() >= self.probability:
            return 1.0, False
        switch = self.mixup_alpha == 0 or torch.rand(()).item() < self.switch_probability
        use_cutmix = self.cutmix_alpha > 0 and switch
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(torch.distributions.Beta(alpha, alpha).sample()), use_cutmix

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mixed (N, C, H, W) batch and its (N, num_classes) soft targets.

        `labels` are class ids (N,) or multi-hot rows (N, num_classes); the targets of multi-hot rows are per-label
        probabilities (for a binary cross-entropy), not a distribution over the classes.
        """
        lam, use_cutmix = self._sample()
        if lam < 1.0:
            partner = pixel_values.flip(0)
            if use_cutmix:
                top, bottom, left, right = cutmix_box(pixel_values.shape[-2], pixel_values.shape[-1], lam)
                pixel_values = pixel_values.clone()
                pixel_values[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
                # The box was clipped at the borders: weigh the labels by the pixels actually pasted.
                lam = 1.0 - (bottom - top) * (right - left) / (pixel_values.shape[-2] * pixel_values.shape[-1])
            else:
                pixel_values = pixel_values * lam + partner * (1.0 - lam)
        if labels.ndim == 2:
            targets = smooth_multi_hot(labels, self.label_smoothing)
        else:
            targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        return pixel_values, targets * lam + targets.flip(0) * (1.0 - lam)
