"""ConvNeXt ("A ConvNet for the 2020s", Liu et al., CVPR 2022) as transformers models.

A ConvNeXt is a patchify stem, then stages of blocks separated by downsampling layers. Each block is a 7×7 depthwise
conv, a LayerNorm, and an inverted bottleneck (pointwise 4× expansion, GELU, pointwise projection) scaled by a learned
per-channel layer scale and added back to the input, possibly through stochastic depth. ConvNeXt V2 ("Co-designing and
Scaling ConvNets with Masked Autoencoders", Woo et al., CVPR 2023) adds Global Response Normalization after the GELU
and drops layer scale. timm's variants change the stem (overlapping tiered), where the final LayerNorm sits (before
pooling) and the head (an MLP). Parameter names follow transformers' built-in ConvNext and ConvNextV2, so their
checkpoints move between them and these models without renaming.

This file holds the networks; `inference_convnext.py` holds their inference fast path (`optimize_for_inference`).
Both import nothing of the package but the configuration and each other, so that they run as Hub remote code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)
from transformers.utils.generic import can_return_tuple

from .configuration_convnext import ConvNextConfig


class ConvNextLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dimension of (N, H, W, C) tensors, or of (N, C, H, W) ones with `channels_first`."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last") -> None:
        super().__init__(normalized_shape, eps=eps)
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}.")
        self.data_format = data_format

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return super().forward(features)
        return super().forward(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNextDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `drop_prob` while training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return features
        keep_prob = 1.0 - self.drop_prob
        mask = features.new_empty((features.shape[0],) + (1,) * (features.ndim - 1)).bernoulli_(keep_prob)
        return features * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def check_class_labels(labels: torch.Tensor, config: ConvNextConfig) -> None:
    """Refuse integer class labels outside 0..num_labels-1 (-100, PyTorch's ignore index, is allowed): the loss would
    fail deep inside PyTorch, or on a GPU with an unreadable device-side assert."""
    if config.num_labels < 2 or labels.is_floating_point() or labels.dtype == torch.bool or labels.numel() == 0:
        return
    outside = labels[(labels != -100) & ((labels < 0) | (labels >= config.num_labels))]
    if outside.numel():
        raise ValueError(
            f"labels must be class numbers in 0..{config.num_labels - 1} (or -100 to ignore an image), got "
            f"{outside.unique()[:5].tolist()}; map the labels with config.label2id."
        )


def check_pixel_values(pixel_values: torch.Tensor | None, config: ConvNextConfig) -> None:
    """Refuse inputs the network cannot take, saying what is wrong and how to fix it."""
    if pixel_values is None:
        raise ValueError("pixel_values is required: pass a (batch, channels, height, width) float tensor.")
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
            "use the image processor with return_tensors='pt'."
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape "
            f"{tuple(pixel_values.shape)}; add a batch dimension with pixel_values.unsqueeze(0) for a single image."
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}; "
            "normalize the images with the image processor (or call .float() and scale them yourself)."
        )
    batch, channels, height, width = pixel_values.shape
    if batch == 0:
        raise ValueError("pixel_values is an empty batch (batch size 0); pass at least one image.")
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels but the model expects {config.num_channels} "
            "(config.num_channels); give the images that many channels, e.g. with the image processor "
            "(RGB by default; do_convert_rgb=False keeps each image's own channels)."
        )
    if height < config.total_stride or width < config.total_stride:
        raise ValueError(
            f"pixel_values spatial size {height}×{width} is smaller than the model's total stride "
            f"{config.total_stride}; resize the images to at least {config.total_stride}×{config.total_stride}."
        )


class ConvNextEmbeddings(nn.Module):
    """The patchify stem: a non-overlapping `patch_size`×`patch_size` conv, then a LayerNorm (none when isotropic).

    timm's overlapping tiered stem (`stem_type="overlap_tiered"`) replaces the patchify conv by two 3×3 stride-2 convs
    with no activation between them.
    """

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__()
        self.config = config
        if config.stem_type == "overlap_tiered":
            self.patch_embeddings = nn.Sequential(
                nn.Conv2d(config.num_channels, config.stem_mid_channels, kernel_size=3, stride=2, padding=1),
                nn.Conv2d(config.stem_mid_channels, config.hidden_sizes[0], kernel_size=3, stride=2, padding=1),
            )
        else:
            self.patch_embeddings = nn.Conv2d(
                config.num_channels, config.hidden_sizes[0], kernel_size=config.patch_size, stride=config.patch_size
            )
        self.layernorm = (
            nn.Identity()
            if config.isotropic
            else ConvNextLayerNorm(config.hidden_sizes[0], eps=config.layer_norm_eps, data_format="channels_first")
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixel_values(pixel_values, self.config)
        # Images arrive in float32 from the image processor; a half-precision model computes in its own dtype.
        pixel_values = pixel_values.to(next(self.patch_embeddings.parameters()).dtype)
        return self.layernorm(self.patch_embeddings(pixel_values))


class ConvNextGRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2, eq. 1-3) on (N, H, W, C) features: each channel's L2 norm over the
    image, divided by its mean over channels, recalibrates that channel; learned gamma (`weight`) and beta (`bias`)
    start at zero, so that the block starts as the identity plus the input."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        # Shaped (1, 1, 1, C) like transformers' ConvNextV2GRN, so that its checkpoints load strictly.
        self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        global_features = torch.linalg.vector_norm(features, ord=2, dim=(1, 2), keepdim=True)
        normalized = global_features / (global_features.mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (features * normalized) + self.bias + features


class ConvNextLayer(GradientCheckpointingLayer):
    """The ConvNeXt block: depthwise 7×7 conv, LayerNorm, 4× inverted bottleneck with GELU (then GRN in V2), layer
    scale (V1), residual."""

    def __init__(self, config: ConvNextConfig, dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layernorm = ConvNextLayerNorm(dim, eps=config.layer_norm_eps)
        # The pointwise (1×1) convs are linear layers on channels-last features: the same maps, faster in PyTorch.
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = ACT2FN[config.hidden_act]
        self.grn = ConvNextGRN(4 * dim) if config.use_grn else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_parameter = (
            nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))
            if config.layer_scale_init_value > 0
            else None
        )
        self.drop_path = ConvNextDropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        residual = features
        # One step per statement, so that each intermediate is freed as soon as the next step has used it.
        features = self.dwconv(features).permute(0, 2, 3, 1)
        features = self.layernorm(features)
        features = self.pwconv1(features)
        features = self.act(features)
        if self.grn is not None:
            features = self.grn(features)
        features = self.pwconv2(features)
        if self.layer_scale_parameter is not None:
            features = self.layer_scale_parameter * features
        return residual + self.drop_path(features.permute(0, 3, 1, 2))


class ConvNextStage(nn.Module):
    """A stage: a downsampling layer (LayerNorm, then a 2×2 stride-2 conv; none in the first stage), then blocks."""

    def __init__(
        self,
        config: ConvNextConfig,
        in_channels: int,
        out_channels: int,
        drop_path_rates: list[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        if downsample:
            self.downsampling_layer = nn.Sequential(
                ConvNextLayerNorm(in_channels, eps=config.layer_norm_eps, data_format="channels_first"),
                nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2),
            )
        else:
            self.downsampling_layer = nn.Identity()
        self.layers = nn.ModuleList(ConvNextLayer(config, out_channels, rate) for rate in drop_path_rates)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.downsampling_layer(features)
        for layer in self.layers:
            features = layer(features)
        return features


class ConvNextEncoder(nn.Module):
    """The stages. Stochastic depth grows linearly from 0 at the first block to `drop_path_rate` at the last."""

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        widths = [config.hidden_sizes[0], *config.hidden_sizes]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(config.depths):
            start = sum(config.depths[:i])
            stage = ConvNextStage(config, widths[i], widths[i + 1], rates[start : start + depth], downsample=i > 0)
            self.stages.append(stage)

    def forward(
        self, features: torch.Tensor, keep: set[int] = frozenset()
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """Return the last stage's output and the hidden states (the stem output, then every stage's output) whose
        index is in `keep`, None in place of the others, so that those are freed as soon as the next stage has used
        them."""
        hidden_states = [features if 0 in keep else None]
        for index, stage in enumerate(self.stages, start=1):
            features = stage(features)
            hidden_states.append(features if index in keep else None)
        return features, tuple(hidden_states)


def is_selection(output_hidden_states: bool | int | list[int] | None) -> bool:
    """Whether `output_hidden_states` selects layers by index (an int or a list), as transformers allows."""
    return output_hidden_states is not None and not isinstance(output_hidden_states, bool)


def hidden_state_indices(output_hidden_states: bool | int | list[int] | None, num_hidden_states: int) -> set[int]:
    """Indices of the hidden states to return: all for True, none for False or None, or the ones transformers'
    `output_hidden_states=[0, 2]` (or an int; negative counts from the end; out of range selects nothing) picks."""
    if not is_selection(output_hidden_states):
        return set(range(num_hidden_states)) if output_hidden_states else set()
    selection = [output_hidden_states] if isinstance(output_hidden_states, int) else output_hidden_states
    # Kept self-contained (not transformers.utils.output_capturing) so that the file runs as remote code on any 5.x.
    return {index % num_hidden_states for index in selection if -num_hidden_states <= index < num_hidden_states}


def returned_hidden_states(
    hidden_states: tuple[torch.Tensor | None, ...], output_hidden_states: bool | int | list[int] | None
) -> tuple[torch.Tensor | None, ...] | None:
    """The hidden states as transformers returns them: None when not asked for, else all of them with None in place
    of those a selection leaves out."""
    if not is_selection(output_hidden_states) and not output_hidden_states:
        return None
    return hidden_states


# optimize_for_inference() (inference_convnext.py) folds the blocks; the folded model refuses what needs the originals.
INFERENCE_ONLY_MESSAGE = (
    "This ConvNeXt was prepared by optimize_for_inference(), which folds its LayerNorm affines and layer scales into "
    "the pointwise layers, so it cannot {action}. Load it again with from_pretrained() to {action} it, and call "
    "optimize_for_inference() only on the copy you run inference with."
)


# transformers' built-in ConvNextV2ForImageClassification keeps the trunk under `convnextv2.`; the rest matches.
BUILTIN_KEY_MAPPING = {r"^convnextv2\.": "convnext."}


class ConvNextPreTrainedModel(PreTrainedModel):
    """Weight initialization and loading conventions shared by the ConvNeXt models."""

    config_class = ConvNextConfig
    config: ConvNextConfig
    base_model_prefix = "convnext"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConvNextLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official initialization: truncated normal (std 0.02) weights and zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            scale = self.config.head_init_scale if module is getattr(self, "classifier", None) else 1.0
            if scale == 0:
                # A zero-initialised head (head_init_scale 0): the truncated normal would divide by its std of 0.
                init.zeros_(module.weight)
            else:
                # The distribution is symmetric: a negative head_init_scale draws the same weights as its magnitude.
                init.trunc_normal_(module.weight, std=std * abs(scale))
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ConvNextLayer) and module.layer_scale_parameter is not None:
            init.constant_(module.layer_scale_parameter, self.config.layer_scale_init_value)
        elif isinstance(module, ConvNextGRN):
            init.zeros_(module.weight)
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> ConvNextPreTrainedModel:
        """Load as transformers does; folders of the built-in ConvNextV2 load too (trunk under `convnextv2.`)."""
        kwargs.setdefault("key_mapping", BUILTIN_KEY_MAPPING)
        return super().from_pretrained(*args, **kwargs)

    @property
    def is_optimized_for_inference(self) -> bool:
        """Whether optimize_for_inference() has folded this model's blocks (it can then neither train nor be saved)."""
        return any(getattr(module, "is_folded", False) for module in self.modules())

    def optimize_for_inference(
        self,
        dtype: torch.dtype | str | None = None,
        channels_last: bool = True,
        compile: bool = False,
        compile_options: dict | None = None,
    ) -> ConvNextPreTrainedModel:
        """Make this model fast for inference, in place, and return it (see docs/performance.md).

        Every block's LayerNorm affine and layer scale are folded into its pointwise layers; the model is put in eval
        mode without gradients, cast to `dtype` (None keeps the current one, "auto" picks bfloat16 on GPUs and on CPUs
        with AMX), its convolutions set to channels-last memory so that every feature map stays (N, H, W, C) in memory
        and no permute copies, and with `compile` it goes through `torch.compile(**compile_options)`. Outputs equal the
        original model's up to float rounding; they come in the model's dtype and channels-last memory format. Calling
        it again only changes dtype, layout or compilation: blocks are folded once. The result refuses `.train()` and
        `save_pretrained()`: reload the checkpoint for those.
        """
        # Imported here: the fast path builds on the blocks of this file.
        from .inference_convnext import optimize_for_inference

        return optimize_for_inference(self, dtype, channels_last, compile, compile_options)

    def train(self, mode: bool = True) -> ConvNextPreTrainedModel:
        """Set training mode, as nn.Module does; refused once the model is optimized for inference."""
        if mode and self.is_optimized_for_inference:
            raise RuntimeError(INFERENCE_ONLY_MESSAGE.format(action="train"))
        return super().train(mode)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Save as transformers does; refused once optimized for inference, since no checkpoint holds folded blocks."""
        if self.is_optimized_for_inference:
            raise RuntimeError(INFERENCE_ONLY_MESSAGE.format(action="save"))
        return super().save_pretrained(save_directory, *args, **kwargs)


class ConvNextModel(ConvNextPreTrainedModel):
    """The ConvNeXt trunk: stem and stages, then global average pooling and a final LayerNorm (with
    `head_norm_first`, as timm's `*_hnf`: the LayerNorm at every position, then pooling)."""

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__(config)
        self.embeddings = ConvNextEmbeddings(config)
        self.encoder = ConvNextEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        """Return the last feature map, its pooled and normalized vector, and optionally the stages' outputs (all of
        them, or a selection such as `output_hidden_states=[0, 2]`)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        keep = hidden_state_indices(output_hidden_states, self.config.num_stages + 1)
        last_hidden_state, hidden_states = self.encoder(self.embeddings(pixel_values), keep)
        if self.config.head_norm_first:
            pooled_output = self.layernorm(last_hidden_state.permute(0, 2, 3, 1)).mean(dim=(1, 2))
        else:
            pooled_output = self.layernorm(last_hidden_state.mean(dim=(-2, -1)))
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled_output,
            hidden_states=returned_hidden_states(hidden_states, output_hidden_states),
        )


class ConvNextPreLogits(nn.Module):
    """The hidden layer of an MLP head (timm's `convnext_large_mlp`, the CLIP towers): Linear, then GELU."""

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_sizes[-1], config.head_hidden_size)
        self.act = nn.GELU()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(pooled))


class ConvNextForImageClassification(ConvNextPreTrainedModel):
    """ConvNeXt with a linear classifier on the pooled features, e.g. for ImageNet (an MLP with `head_hidden_size`)."""

    accepts_loss_kwargs = False

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.convnext = ConvNextModel(config)
        self.pre_logits = ConvNextPreLogits(config) if config.head_hidden_size else nn.Identity()
        head_width = config.head_hidden_size or config.hidden_sizes[-1]
        self.classifier = nn.Linear(head_width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention:
        """Return class logits, and the loss when `labels` are given (cross-entropy, BCE or MSE by problem type)."""
        outputs = self.convnext(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.pre_logits(outputs.pooler_output))
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config)
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class ConvNextBackbone(BackboneMixin, ConvNextPreTrainedModel):
    """ConvNeXt feature pyramid for detection and segmentation heads (UperNet, Mask R-CNN, DETR...).

    Like the official detection and segmentation backbones, each returned stage goes through its own LayerNorm.
    """

    has_attentions = False

    def __init__(self, config: ConvNextConfig) -> None:
        super().__init__(config)
        self.embeddings = ConvNextEmbeddings(config)
        self.encoder = ConvNextEncoder(config)
        self.num_features = [config.hidden_sizes[0], *config.hidden_sizes]
        self.hidden_states_norms = nn.ModuleDict(
            {
                stage: ConvNextLayerNorm(channels, eps=config.layer_norm_eps, data_format="channels_first")
                for stage, channels in zip(self.out_features, self.channels, strict=True)
            }
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        **kwargs,
    ) -> BackboneOutput:
        """Return the normalized feature maps of `config.out_features`, and optionally the stages' raw outputs (all of
        them, or a selection such as `output_hidden_states=[0, 2]`)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        selected = hidden_state_indices(output_hidden_states, len(self.stage_names))
        out_indices = [self.stage_names.index(stage) for stage in self.out_features]
        _, hidden_states = self.encoder(self.embeddings(pixel_values), selected | set(out_indices))
        feature_maps = tuple(
            self.hidden_states_norms[stage](hidden_states[index])
            for stage, index in zip(self.out_features, out_indices, strict=True)
        )
        hidden_states = tuple(state if i in selected else None for i, state in enumerate(hidden_states))
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=returned_hidden_states(hidden_states, output_hidden_states)
        )


__all__ = [
    "ConvNextPreTrainedModel",
    "ConvNextModel",
    "ConvNextForImageClassification",
    "ConvNextBackbone",
]
