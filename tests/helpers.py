"""Helpers the test modules import: golden fixtures, the converter's command line, tensor comparison, hostile files."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from convnext_hf.cli import main as cli_main

FIXTURES = Path(__file__).parent / "fixtures"


def golden_expected(case: str, folder: Path = FIXTURES) -> dict[str, torch.Tensor]:
    """Inputs and reference outputs of a golden case (`mini`, `iso-mini`, `upernet-mini`; `family/` ones in FAMILY)."""
    return load_file(folder / f"{case}.expected.safetensors")


def run_convert(*argv: object) -> int:
    """`convnext-hf convert ARGV` in this process; returns its exit status."""
    return cli_main(["convert", *(str(arg) for arg in argv)])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference of two tensors."""
    return (a - b).abs().max().item()


def conversion_cache(tmp_path_factory, source: Path) -> Callable[..., Path]:
    """`get(file_name, target)`: the folder `convnext-hf convert` makes of `source / file_name`, converted once."""
    folders: dict[tuple[str, str], Path] = {}

    def get(file_name: str, target: str = "convnext_hf") -> Path:
        if (file_name, target) not in folders:
            output = tmp_path_factory.mktemp("converted") / f"{file_name.replace('/', '-')}-{target}"
            assert run_convert("--checkpoint", source / file_name, "--output_dir", output, "--target", target) == 0
            folders[file_name, target] = output
        return folders[file_name, target]

    return get


# transformers heads that take a ConvNeXt backbone, tiny enough to build in milliseconds: name -> (builder, stages).
# A builder takes the backbone config (ours or the built-in's); RT-DETR and its descendants read the last three stages.
_ATTENTION = dict(encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)
_DETR = dict(d_model=32, encoder_layers=1, decoder_layers=2, num_queries=5, num_labels=3, **_ATTENTION)
_RT_DETR = dict(
    d_model=32, encoder_hidden_dim=32, encoder_ffn_dim=32, decoder_ffn_dim=32, decoder_layers=2, num_queries=5,
    num_labels=3, decoder_in_channels=[32, 32, 32],
)
_MASKED = dict(encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=5, num_labels=3)
ALL_STAGES = [1, 2, 3, 4]
LAST_THREE = [2, 3, 4]


def _rt_detr(config_class, model_class):
    def build(backbone):
        channels = [backbone.hidden_sizes[i - 1] for i in LAST_THREE]
        return model_class(config_class(backbone_config=backbone, encoder_in_channels=channels, **_RT_DETR))

    return build, LAST_THREE


HEADS = {
    "upernet": (
        lambda b: transformers.UperNetForSemanticSegmentation(
            transformers.UperNetConfig(backbone_config=b, hidden_size=16, auxiliary_channels=8, num_labels=3)
        ),
        ALL_STAGES,
    ),
    "detr": (
        lambda b: transformers.DetrForObjectDetection(
            transformers.DetrConfig(use_timm_backbone=False, backbone_config=b, **_DETR)
        ),
        ALL_STAGES,
    ),
    "conditional_detr": (
        lambda b: transformers.ConditionalDetrForObjectDetection(
            transformers.ConditionalDetrConfig(use_timm_backbone=False, backbone_config=b, **_DETR)
        ),
        ALL_STAGES,
    ),
    "dab_detr": (
        lambda b: transformers.DabDetrForObjectDetection(
            transformers.DabDetrConfig(
                use_timm_backbone=False, backbone_config=b, hidden_size=32, encoder_layers=1, decoder_layers=2,
                num_queries=5, num_labels=3, **_ATTENTION,
            )
        ),
        ALL_STAGES,
    ),
    "deformable_detr": (
        lambda b: transformers.DeformableDetrForObjectDetection(
            transformers.DeformableDetrConfig(
                use_timm_backbone=False, backbone_config=b, encoder_n_points=2, decoder_n_points=2, **_DETR
            )
        ),
        ALL_STAGES,
    ),
    "rt_detr": _rt_detr(transformers.RTDetrConfig, transformers.RTDetrForObjectDetection),
    "rt_detr_v2": _rt_detr(transformers.RTDetrV2Config, transformers.RTDetrV2ForObjectDetection),
    "d_fine": _rt_detr(transformers.DFineConfig, transformers.DFineForObjectDetection),
    "deimv2": _rt_detr(transformers.Deimv2Config, transformers.Deimv2ForObjectDetection),
    "grounding_dino": (
        lambda b: transformers.GroundingDinoForObjectDetection(
            transformers.GroundingDinoConfig(
                backbone_config=b, encoder_n_points=2, decoder_n_points=2, max_text_len=8,
                text_config=dict(
                    model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, vocab_size=64,
                ),
                **{key: value for key, value in _DETR.items() if key != "num_labels"},
            )
        ),
        ALL_STAGES,
    ),
    "mask2former": (
        lambda b: transformers.Mask2FormerForUniversalSegmentation(
            transformers.Mask2FormerConfig(
                backbone_config=b, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
                dim_feedforward=32, **_MASKED,
            )
        ),
        ALL_STAGES,
    ),
    "maskformer": (
        lambda b: transformers.MaskFormerForInstanceSegmentation(
            transformers.MaskFormerConfig(
                backbone_config=b, fpn_feature_size=32, mask_feature_size=32, num_queries=5, num_labels=3,
                decoder_config=dict(model_type="detr", d_model=32, encoder_layers=1, decoder_layers=1, **_ATTENTION),
            )
        ),
        ALL_STAGES,
    ),
    "oneformer": (
        lambda b: transformers.OneFormerForUniversalSegmentation(
            transformers.OneFormerConfig(
                backbone_config=b, hidden_dim=32, conv_dim=32, mask_dim=32, encoder_feedforward_dim=32,
                dim_feedforward=32, text_encoder_num_layers=1, text_encoder_width=32, text_encoder_context_length=8,
                text_encoder_vocab_size=64, text_encoder_proj_layers=1, task_seq_len=8, max_seq_len=8, **_MASKED,
            )
        ),
        ALL_STAGES,
    ),
}

# Where each head keeps its backbone (transformers 5.24).
BACKBONE_PATHS = {
    "upernet": "backbone",
    "detr": "model.backbone.model",
    "conditional_detr": "model.backbone.model",
    "dab_detr": "model.backbone.conv_encoder.model",
    "deformable_detr": "model.backbone.model",
    "rt_detr": "model.backbone.model",
    "rt_detr_v2": "model.backbone.model",
    "d_fine": "model.backbone.model",
    "deimv2": "model.conv_encoder.model",
    "grounding_dino": "model.backbone.conv_encoder.model",
    "mask2former": "model.pixel_level_module.encoder",
    "maskformer": "model.pixel_level_module.encoder",
    "oneformer": "model.pixel_level_module.encoder",
}


def build_head(name: str, backbone_config: transformers.PreTrainedConfig) -> transformers.PreTrainedModel:
    """The tiny `name` head over a backbone of `backbone_config` (its out_indices set as that head needs)."""
    build, out_indices = HEADS[name]
    backbone_config.out_indices = out_indices
    return build(backbone_config).eval()


# Runs in each torchrun process: `convnext-hf train` with a spy on the Trainer's training step that writes down which
# images the process trained on, and with a spy on saving that writes down the sum of the weights it holds (the same on
# both ranks only when the gradients are averaged between them). Every training image is one flat grey level,
# GREY_STEP × its number, which survives cropping and resizing; un-normalizing the first pixel gives the number back.
GREY_STEP = 8
DRIVER = f"""
import json, os, sys
from convnext_hf.train import main
from convnext_hf.train.trainer import ConvNextTrainer

seen = []
train_step = ConvNextTrainer.training_step

def recording_step(self, model, inputs, *args, **kwargs):
    mean, std = self.processing_class.image_mean[0], self.processing_class.image_std[0]
    grey = (inputs["pixel_values"][:, 0, 0, 0] * std + mean) * 255
    seen.extend(round(value / {GREY_STEP}) for value in grey.tolist())
    return train_step(self, model, inputs, *args, **kwargs)

ConvNextTrainer.training_step = recording_step
sums = []
save_model = ConvNextTrainer.save_model

def recording_save(self, *args, **kwargs):
    sums.append(sum(value.double().sum().item() for value in self.model.state_dict().values()))
    return save_model(self, *args, **kwargs)

ConvNextTrainer.save_model = recording_save
main(sys.argv[2:])
with open(os.path.join(sys.argv[1], "seen-rank" + os.environ["RANK"] + ".json"), "w") as file:
    json.dump({{"seen": seen, "weight_sums": sums}}, file)
"""


def ban_network(monkeypatch) -> list:
    """Refuse every network connection (recorded in the list returned); local Unix sockets, which the loader's worker
    processes use to hand their batches over, still connect."""
    import socket

    attempts = []
    connect = socket.socket.connect

    def no_network(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return connect(self, address)
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return attempts


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height 8-bit RGB pixels, followed by one tiny compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = chunk(b"IDAT", zlib.compress(b"\0" * 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + row + chunk(b"IEND", b"")
