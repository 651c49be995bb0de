"""The inference fast path behind `ConvNextPreTrainedModel.optimize_for_inference()`.

The same block math as `ConvNextLayer` in eval mode, regrouped for speed: LayerNorm affines and layer scales folded
into the pointwise layers, channels-last memory, and on CPU the oneDNN kernels that fuse pwconv1 + GELU and
pwconv2 + residual (with ConvNeXt V2's GRN applied between the two). Kept apart from `modeling_convnext.py` so that
the networks there read as the paper writes them. This file ships with saved models as Hub remote code, beside the
modeling file.

Private torch APIs used here (`torch.ops.mkldnn._linear_pointwise`, `_is_mkldnn_bf16_supported`,
`torch.cpu._is_amx_tile_supported`) are looked up defensively: a torch without them takes the plain path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .modeling_convnext import INFERENCE_ONLY_MESSAGE, ConvNextLayer, ConvNextPreTrainedModel, ConvNextStage


def amx_is_available() -> bool:
    """Whether this CPU has AMX tile units, which run bfloat16 matrix products several times faster than float32."""
    is_supported = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(is_supported is not None and is_supported())


def onednn_supports_bfloat16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX-512 BF16 or AMX)."""
    if not torch.backends.mkldnn.is_available():
        return False
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(is_supported is not None and is_supported())


def inference_dtype(requested: torch.dtype | str | None, device: torch.device, current: torch.dtype) -> torch.dtype:
    """Resolve optimize_for_inference's `dtype`: None keeps `current`; "auto" picks bfloat16 on GPUs and AMX CPUs."""
    if requested is None:
        return current
    if requested == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and amx_is_available() else current
    if isinstance(requested, torch.dtype) and requested.is_floating_point:
        return requested
    raise TypeError(
        f"dtype must be None (keep the model's dtype), 'auto' or a floating-point torch.dtype such as torch.bfloat16, "
        f"got {requested!r}."
    )


# glibc returns allocations above 32 MiB to the OS when they are freed, so a 4×-wide hidden activation that large
# page-faults anew on every call; chunks of 8 MiB are recycled from the heap and stay in cache.
LARGE_ALLOCATION_BYTES = 32 * 2**20
CHUNK_BYTES = 8 * 2**20


def fold_block(layer: ConvNextLayer) -> tuple[nn.Linear, nn.Linear]:
    """Fold the block's LayerNorm affine into pwconv1 and its layer scale into pwconv2 (computed in float64).

    pwconv1(g ⊙ x̂ + β) = (W1·diag(g)) x̂ + (b1 + W1 β), and γ ⊙ pwconv2(h) = (diag(γ)·W2) h + γ ⊙ b2.
    """
    weight1, bias1 = layer.pwconv1.weight.double(), layer.pwconv1.bias.double()
    weight2, bias2 = layer.pwconv2.weight.double(), layer.pwconv2.bias.double()
    gain, shift = layer.layernorm.weight.double(), layer.layernorm.bias.double()
    scale = torch.ones_like(bias2) if layer.layer_scale_parameter is None else layer.layer_scale_parameter.double()
    folded = (
        (weight1 * gain, bias1 + weight1 @ shift, layer.pwconv1),
        (scale[:, None] * weight2, scale * bias2, layer.pwconv2),
    )
    linears = []
    for weight, bias, original in folded:
        linear = nn.Linear(original.in_features, original.out_features, device="meta")
        linear.weight = nn.Parameter(weight.to(original.weight), requires_grad=False)
        linear.bias = nn.Parameter(bias.to(original.bias), requires_grad=False)
        linears.append(linear)
    return linears[0], linears[1]


def onednn_can_run(features: torch.Tensor) -> bool:
    """Whether the fused oneDNN linear kernels (inference-only, CPU, float32/bfloat16) can compute on `features`."""
    return (
        features.device.type == "cpu"
        and (features.dtype == torch.float32 or features.dtype == torch.bfloat16 and onednn_supports_bfloat16())
        and not (torch.is_grad_enabled() and features.requires_grad)
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class ConvNextFoldedLayer(nn.Module):
    """A ConvNeXt block for inference only: the same function as `ConvNextLayer` in eval mode, with its LayerNorm
    affine and layer scale folded into the pointwise layers (see `fold_block`) and every step run on (N, H, W, C) data.

    On channels-last inputs the permutes are views, so the block makes no layout copies. On CPU, when no gradient is
    needed and the graph is not being compiled, pwconv1 + GELU and pwconv2 + residual each run as one oneDNN kernel,
    saving two full passes over the activations; under torch.compile the plain ops are left for inductor to fuse.
    """

    is_folded = True

    def __init__(self, layer: ConvNextLayer, hidden_act: str) -> None:
        super().__init__()
        self.dwconv = layer.dwconv
        self.eps = layer.layernorm.eps
        self.pwconv1, self.pwconv2 = fold_block(layer)
        self.act = layer.act
        self.grn = layer.grn
        self.fuse_gelu = hidden_act == "gelu"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalized = F.layer_norm(self.dwconv(features).permute(0, 2, 3, 1), (features.shape[1],), eps=self.eps)
        residual = features.permute(0, 2, 3, 1)
        if self.fuse_gelu and onednn_can_run(normalized):
            if self.grn is None:
                output = self.fused_inverted_bottleneck(normalized, residual.contiguous())
            else:
                output = self.fused_grn_bottleneck(normalized, residual.contiguous())
        else:
            hidden = self.act(self.pwconv1(normalized))
            if self.grn is not None:
                hidden = self.grn(hidden)
            output = residual + self.pwconv2(hidden)
        return output.permute(0, 3, 1, 2)

    def fused_inverted_bottleneck(self, normalized: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + pwconv2(GELU(pwconv1(normalized))) in two oneDNN kernels, over chunks of pixels when large."""
        pixels, channels = residual.numel() // residual.shape[-1], residual.shape[-1]
        inputs, residuals = normalized.reshape(pixels, channels), residual.reshape(pixels, channels)
        hidden_bytes_per_pixel = self.pwconv1.out_features * normalized.element_size()
        if pixels * hidden_bytes_per_pixel <= LARGE_ALLOCATION_BYTES:
            return self.fused_rows(inputs, residuals).view_as(residual)
        output = torch.empty_like(residuals)
        chunk = max(1, CHUNK_BYTES // hidden_bytes_per_pixel)
        for start in range(0, pixels, chunk):
            rows = slice(start, start + chunk)
            output[rows] = self.fused_rows(inputs[rows], residuals[rows])
        return output.view_as(residual)

    def fused_grn_bottleneck(self, normalized: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + pwconv2(GRN(GELU(pwconv1(normalized)))) for V2 blocks: the pointwise layers as the same oneDNN
        kernels, never in chunks of pixels, since GRN normalizes over each image's whole hidden map."""
        channels = residual.shape[-1]
        hidden = torch.ops.mkldnn._linear_pointwise(
            normalized.reshape(-1, channels), self.pwconv1.weight, self.pwconv1.bias, "gelu", [], "none"
        )
        hidden = self.grn(hidden.view(*residual.shape[:-1], hidden.shape[-1]))
        return torch.ops.mkldnn._linear_pointwise.binary(
            hidden.reshape(-1, hidden.shape[-1]), residual.reshape(-1, channels), self.pwconv2.weight,
            self.pwconv2.bias, "add",
        ).view_as(residual)

    def fused_rows(self, inputs: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """The inverted bottleneck on (pixels, channels) rows: pwconv1 with GELU, then pwconv2 adding the residual."""
        hidden = torch.ops.mkldnn._linear_pointwise(inputs, self.pwconv1.weight, self.pwconv1.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise.binary(
            hidden, residuals, self.pwconv2.weight, self.pwconv2.bias, "add"
        )

    def train(self, mode: bool = True) -> ConvNextFoldedLayer:
        """Stay in eval mode; training a folded block is refused."""
        if mode:
            raise RuntimeError(INFERENCE_ONLY_MESSAGE.format(action="train"))
        return super().train(False)


def optimize_for_inference(
    model: ConvNextPreTrainedModel,
    dtype: torch.dtype | str | None = None,
    channels_last: bool = True,
    compile: bool = False,
    compile_options: dict | None = None,
) -> ConvNextPreTrainedModel:
    """Fold `model`'s blocks, freeze it and set dtype, memory format and compilation (see its method's docstring)."""
    target_dtype = inference_dtype(dtype, model.device, model.dtype)
    for stage in [module for module in model.modules() if isinstance(module, ConvNextStage)]:
        stage.layers = nn.ModuleList(
            ConvNextFoldedLayer(layer, model.config.hidden_act) if isinstance(layer, ConvNextLayer) else layer
            for layer in stage.layers
        )
    model.eval().requires_grad_(False)
    model.to(dtype=target_dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if compile:
        model.compile(**(compile_options or {}))
    return model
