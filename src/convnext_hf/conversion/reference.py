"""The official forward passes, written as functions of a state dict in official names.

This is a second, independent implementation of ConvNeXt (facebookresearch/ConvNeXt `models/convnext.py` and
`convnext_isotropic.py`), of ConvNeXt V2 (facebookresearch/ConvNeXt-V2 `models/convnextv2.py`: GRN), of timm's
variants (overlapping tiered stem, head norm first, MLP head; names in `naming.py`) and of mmsegmentation's UPerHead,
sharing no code with the transformers models: the converter checks that a converted model reproduces it, so a wrong
mapping or a model bug cannot pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

EPS = 1e-6  # every LayerNorm of the official code
BN_EPS = 1e-5  # mmcv's BatchNorm default

Weights = Mapping[str, torch.Tensor]


def _layer_norm_channels_first(x: torch.Tensor, weights: Weights, name: str, eps: float = EPS) -> torch.Tensor:
    channels_last = x.permute(0, 2, 3, 1)
    normalized = F.layer_norm(channels_last, x.shape[1:2], weights[f"{name}.weight"], weights[f"{name}.bias"], eps)
    return normalized.permute(0, 3, 1, 2)


def _grn(y: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """ConvNeXt V2's GRN on (N, H, W, C): Gx = ||x|| over H, W; Nx = Gx / (mean over C of Gx + 1e-6)."""
    gx = torch.norm(y, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return gamma * (y * nx) + beta + y


def _block(x: torch.Tensor, weights: Weights, name: str, eps: float) -> torch.Tensor:
    """dwconv 7×7 -> LayerNorm -> Linear 4C -> GELU -> (V2: GRN) -> Linear C -> (V1: layer scale), plus the input."""
    y = F.conv2d(x, weights[f"{name}.dwconv.weight"], weights[f"{name}.dwconv.bias"], padding=3, groups=x.shape[1])
    y = y.permute(0, 2, 3, 1)
    y = F.layer_norm(y, y.shape[-1:], weights[f"{name}.norm.weight"], weights[f"{name}.norm.bias"], eps)
    y = F.gelu(F.linear(y, weights[f"{name}.pwconv1.weight"], weights[f"{name}.pwconv1.bias"]))
    if f"{name}.grn.gamma" in weights:
        y = _grn(y, weights[f"{name}.grn.gamma"], weights[f"{name}.grn.beta"])
    y = F.linear(y, weights[f"{name}.pwconv2.weight"], weights[f"{name}.pwconv2.bias"])
    if f"{name}.gamma" in weights:
        y = weights[f"{name}.gamma"] * y
    return x + y.permute(0, 3, 1, 2)


def _stem(weights: Weights, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The 4×4 patchify conv, or timm's overlapping tiered stem (3×3/s2 conv, 3×3/s2 conv); then a LayerNorm."""
    if "downsample_layers.0.0.0.weight" in weights:
        for k in range(2):
            conv = f"downsample_layers.0.0.{k}"
            x = F.conv2d(x, weights[f"{conv}.weight"], weights[f"{conv}.bias"], stride=2, padding=1)
    else:
        kernel = weights["downsample_layers.0.0.weight"]
        x = F.conv2d(x, kernel, weights["downsample_layers.0.0.bias"], stride=kernel.shape[-1])
    return _layer_norm_channels_first(x, weights, "downsample_layers.0.1", eps)


def stage_outputs(weights: Weights, x: torch.Tensor, eps: float = EPS) -> list[torch.Tensor]:
    """Output of every stage (one for the isotropic model), before any output norm."""
    if "stem.weight" in weights:
        stem = weights["stem.weight"]
        x = F.conv2d(x, stem, weights["stem.bias"], stride=stem.shape[-1])
        depth = len({key.split(".")[1] for key in weights if key.startswith("blocks.")})
        for j in range(depth):
            x = _block(x, weights, f"blocks.{j}", eps)
        return [x]
    outputs = []
    num_stages = len({key.split(".")[1] for key in weights if key.startswith("downsample_layers.")})
    for i in range(num_stages):
        if i == 0:
            x = _stem(weights, x, eps)
        else:
            x = _layer_norm_channels_first(x, weights, f"downsample_layers.{i}.0", eps)
            kernel = weights[f"downsample_layers.{i}.1.weight"]
            x = F.conv2d(x, kernel, weights[f"downsample_layers.{i}.1.bias"], stride=kernel.shape[-1])
        depth = len({key.split(".")[2] for key in weights if key.startswith(f"stages.{i}.")})
        for j in range(depth):
            x = _block(x, weights, f"stages.{i}.{j}", eps)
        outputs.append(x)
    return outputs


def classification(weights: Weights, x: torch.Tensor, eps: float = EPS) -> dict[str, torch.Tensor]:
    """Stage outputs, the pooled and normalized features (timm's `norm_pre`: normalized, then pooled), and the
    logits (through the MLP head's hidden layer where there is one) where the checkpoint has a head."""
    stages = stage_outputs(weights, x, eps)
    if "norm_pre.weight" in weights:
        pooled = _layer_norm_channels_first(stages[-1], weights, "norm_pre", eps).mean(dim=(-2, -1))
    else:
        pooled = stages[-1].mean(dim=(-2, -1))
        pooled = F.layer_norm(pooled, pooled.shape[-1:], weights["norm.weight"], weights["norm.bias"], eps)
    outputs = {f"stage{k}": stage for k, stage in enumerate(stages, start=1)}
    outputs["pooled"] = pooled
    if "head.weight" in weights:
        features = pooled
        if "pre_logits.fc.weight" in weights:
            features = F.gelu(F.linear(pooled, weights["pre_logits.fc.weight"], weights["pre_logits.fc.bias"]))
        outputs["logits"] = F.linear(features, weights["head.weight"], weights["head.bias"])
    return outputs


def dense_features(weights: Weights, x: torch.Tensor, eps: float = EPS) -> list[torch.Tensor]:
    """Backbone feature maps of a dense-prediction checkpoint: each stage through its own `backbone.norm{k}`."""
    backbone = {key.removeprefix("backbone."): value for key, value in weights.items() if key.startswith("backbone.")}
    stages = stage_outputs(backbone, x, eps)
    return [_layer_norm_channels_first(stage, backbone, f"norm{k}", eps) for k, stage in enumerate(stages)]


def _conv_module(x: torch.Tensor, weights: Weights, name: str) -> torch.Tensor:
    """mmcv ConvModule: conv (no bias, 'same' padding) -> BatchNorm (running statistics) -> ReLU."""
    kernel = weights[f"{name}.conv.weight"]
    x = F.conv2d(x, kernel, padding=kernel.shape[-1] // 2)
    x = F.batch_norm(x, weights[f"{name}.bn.running_mean"], weights[f"{name}.bn.running_var"],
                     weights[f"{name}.bn.weight"], weights[f"{name}.bn.bias"], training=False, eps=BN_EPS)
    return F.relu(x)


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upernet(
    weights: Weights, x: torch.Tensor, pool_scales: tuple[int, ...], eps: float = EPS
) -> dict[str, torch.Tensor]:
    """mmsegmentation's UPerHead on the ConvNeXt features, logits upsampled to the input size."""
    features = dense_features(weights, x, eps)
    top = features[-1]
    pooled = [
        _conv_module(F.adaptive_avg_pool2d(top, scale), weights, f"decode_head.psp_modules.{i}.1")
        for i, scale in enumerate(pool_scales)
    ]
    pyramid = [top] + [_resize(branch, top.shape[2:]) for branch in pooled]
    laterals = [
        _conv_module(feature, weights, f"decode_head.lateral_convs.{i}") for i, feature in enumerate(features[:-1])
    ]
    laterals.append(_conv_module(torch.cat(pyramid, dim=1), weights, "decode_head.bottleneck"))
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
    outputs = [_conv_module(lateral, weights, f"decode_head.fpn_convs.{i}") for i, lateral in enumerate(laterals[:-1])]
    outputs.append(laterals[-1])
    fused = torch.cat([outputs[0]] + [_resize(output, outputs[0].shape[2:]) for output in outputs[1:]], dim=1)
    logits = F.conv2d(_conv_module(fused, weights, "decode_head.fpn_bottleneck"),
                      weights["decode_head.conv_seg.weight"], weights["decode_head.conv_seg.bias"])
    result = {f"feature{k}": feature for k, feature in enumerate(features, start=1)}
    result["logits"] = _resize(logits, x.shape[2:])
    return result
