"""Model size and compute, as the paper reports them (parameters, and FLOPs counted as multiply-accumulates)."""

from __future__ import annotations

import torch

from .configuration_convnext import ConvNextConfig
from .modeling_convnext import ConvNextForImageClassification


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters of `model` (any network: ConvNeXt, UperNet...), as the paper counts them."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_parameters(config: ConvNextConfig) -> int:
    """Number of parameters of the classification model built from `config` (nothing is allocated)."""
    with torch.device("meta"):
        model = ConvNextForImageClassification(config)
    return parameter_count(model)


def count_macs(config: ConvNextConfig, image_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass at `image_size` (the paper's "FLOPs"), convs and linears only."""
    resolution = (image_size or config.image_size) // config.stem_stride
    width = config.hidden_sizes[0]
    if config.stem_type == "overlap_tiered":
        # two 3×3 convs, the first at half the input resolution
        macs = 9 * config.stem_mid_channels * ((2 * resolution) ** 2 * config.num_channels + resolution**2 * width)
    else:
        macs = resolution**2 * width * config.num_channels * config.patch_size**2
    for stage, (out_width, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
        if stage > 0:
            resolution //= 2
            macs += resolution**2 * out_width * width * 4
        width = out_width
        # depthwise 7×7, then the two pointwise layers of the 4× inverted bottleneck
        macs += depth * resolution**2 * (width * 49 + 2 * width * 4 * width)
    if config.head_hidden_size:
        macs += width * config.head_hidden_size
        width = config.head_hidden_size
    return macs + width * config.num_labels
