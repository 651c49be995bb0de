"""The model card (README.md) of a converted checkpoint: what it is, how well its authors report it does, how to use
it, and how it was converted and verified."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..card_table import facts_table
from ..cli import shell_quote
from ..complexity import count_macs, parameter_count
from ..configuration_convnext import ConvNextConfig
from ..errors import UserInputError
from ..portable import needs_convnext_hf_sentence
from .converter import Conversion
from .naming import BACKBONE, CLASSIFICATION, SEGMENTATION, served_task
from .targets import AUTO_CLASSES, CONVNEXT_HF
from .verification import VERIFY_INPUT_SHAPE
from .zoo import ZooEntry

# A Hub license id (apache-2.0, cc-by-nc-4.0, llama3.1, other): one token that the card's YAML front matter holds as
# it is, never a line break or a character YAML would read as markup.
LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
DATASETS = {  # zoo name -> (Hub dataset id, pretty name)
    "imagenet-1k": ("ILSVRC/imagenet-1k", "ImageNet-1k"),
    "imagenet-22k": ("timm/imagenet-22k-wds", "ImageNet-22k"),
    "ade20k": ("zhoubolei/scene_parse_150", "ADE20K"),
    "coco": ("detection-datasets/coco", "COCO 2017"),
    "imagenet-1k-fcmae": ("ILSVRC/imagenet-1k", "ImageNet-1k (FCMAE self-supervised pre-training)"),
    "imagenet-22k-fcmae": ("timm/imagenet-22k-wds", "ImageNet-1k (FCMAE), then ImageNet-22k"),
    "lvd-1689m": (None, "LVD-1689M (DINOv3 self-supervised distillation, not public)"),
}
CONVNEXT_CITATION = """@inproceedings{liu2022convnet,
  title={A ConvNet for the 2020s},
  author={Liu, Zhuang and Mao, Hanzi and Wu, Chao-Yuan and Feichtenhofer, Christoph and Darrell, Trevor
          and Xie, Saining},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}"""
CONVNEXT_V2_CITATION = """@inproceedings{woo2023convnextv2,
  title={ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders},
  author={Woo, Sanghyun and Debnath, Shoubhik and Hu, Ronghang and Chen, Xinlei and Liu, Zhuang and Kweon, In So
          and Xie, Saining},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2023}
}"""
UPERNET_CITATION = """@inproceedings{xiao2018unified,
  title={Unified Perceptual Parsing for Scene Understanding},
  author={Xiao, Tete and Liu, Yingcheng and Zhou, Bolei and Jiang, Yuning and Sun, Jian},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2018}
}"""


@dataclass(frozen=True)
class Provenance:
    """Where the converted weights came from and how the result was checked."""

    location: str
    sha256: str | None
    diffs: dict[str, float] | None
    tolerance: float
    command: str


def _eval_results(entry: ZooEntry) -> list[EvalResult]:
    source = {"source_name": f"{entry.source} (reported)", "source_url": entry.repository}
    if entry.reported_top1 is not None:
        dataset_id, dataset_name = DATASETS[entry.finetune_dataset or "imagenet-1k"]
        return [
            EvalResult(
                task_type=served_task(CLASSIFICATION).pipeline_tag, dataset_type=dataset_id, dataset_name=dataset_name,
                dataset_split="validation", metric_type="accuracy", metric_name="Top-1 accuracy",
                metric_value=entry.reported_top1, **source,
            )
        ]
    results = []
    for value, config, name in (
        (entry.reported_miou, "single-scale", "mIoU"),
        (entry.reported_miou_ms_flip, "multi-scale+flip", "mIoU (multi-scale, flip)"),
    ):
        if value is not None:
            results.append(
                EvalResult(
                    task_type=served_task(SEGMENTATION).pipeline_tag, dataset_type=DATASETS["ade20k"][0],
                    dataset_name="ADE20K", dataset_split="validation", metric_type="mean_iou", metric_name=name,
                    metric_config=config, metric_value=value, **source,
                )
            )
    return results


def check_license(license: str) -> None:
    """Refuse a --license that is not a Hub license id (it goes into the card's YAML front matter as it is)."""
    if not LICENSE_ID.fullmatch(license):
        raise UserInputError(
            f"--license {license!r} is not a license id; give the Hub's id of the license (letters, digits and . + _ "
            "-, e.g. apache-2.0, mit, cc-by-nc-4.0), or 'other' for a license the Hub does not list."
        )


def card_data(conversion: Conversion, entry: ZooEntry | None, model_name: str, license: str | None) -> ModelCardData:
    """The YAML metadata: license, library, pipeline tag, tags, datasets and the reported results (model-index)."""
    task = conversion.arch.task
    pipeline_tag = served_task(task).pipeline_tag
    tags = ["vision", "convnext", pipeline_tag]
    if task == SEGMENTATION:
        tags += ["upernet", "semantic-segmentation"]
    if _needs_package(conversion):
        tags.append("custom_code")
    names = (entry.pretrain_dataset, entry.finetune_dataset) if entry else ()
    datasets = [DATASETS[name][0] for name in names if name and DATASETS[name][0]]
    eval_results = _eval_results(entry) if entry else []
    return ModelCardData(
        license=license or (entry.license if entry else "unknown"),
        license_name=entry.license_name if entry and not license else None,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=list(dict.fromkeys(datasets)) or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _needs_package(conversion: Conversion) -> bool:
    """Whether loading the saved model needs convnext_hf code: ours, or an UperNet that kept our backbone."""
    if conversion.arch.task == SEGMENTATION:
        return needs_convnext_hf_sentence(conversion.model.config) is not None
    return conversion.target == CONVNEXT_HF


def usage(conversion: Conversion, model_id: str) -> str:
    """Code that loads this repository through the Auto classes and a pipeline."""
    task = conversion.arch.task
    auto_class = AUTO_CLASSES[task].__name__
    registered = _needs_package(conversion)
    lines = ["```python", "from PIL import Image"]
    lines.append(f"from transformers import AutoImageProcessor, {auto_class}, pipeline")
    if registered:
        lines.append("import convnext_hf  # pip install convnext-hf: registers ConvNeXt with the Auto classes")
    lines += [
        "",
        f"model_id = {json.dumps(model_id)}",  # a valid string literal whatever the path holds
        'image = Image.open("image.jpg").convert("RGB")',
        "processor = AutoImageProcessor.from_pretrained(model_id)",
        f"model = {auto_class}.from_pretrained(model_id).eval()",
        'inputs = processor(image, return_tensors="pt")',
    ]
    if task == CLASSIFICATION:
        lines += ["logits = model(**inputs).logits", "print(model.config.id2label[logits.argmax(-1).item()])"]
        lines += ['print(pipeline("image-classification", model=model_id)(image))']
    elif task == SEGMENTATION:
        lines += [
            "outputs = model(**inputs)  # logits: (1, classes, height, width) at the input resolution",
            "segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]",
            'print(pipeline("image-segmentation", model=model_id)(image))',
        ]
    elif task == BACKBONE:
        lines += ["feature_maps = model(**inputs).feature_maps  # one normalized map per stage"]
    else:
        lines += ["pooled = model(**inputs).pooler_output",
                  'print(pipeline("image-feature-extraction", model=model_id)(image))']
    lines.append("```")
    if registered:
        lines += [
            "",
            "Without the `convnext_hf` package, the modeling code stored in this repository runs as remote code:",
            "",
            "```python",
            f"model = {auto_class}.from_pretrained(model_id, trust_remote_code=True)",
            "processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)",
        ]
        if task != BACKBONE:
            lines.append(f'pipe = pipeline("{served_task(task).pipeline_tag}", model=model_id, trust_remote_code=True)')
        lines.append("```")
    if registered and task == SEGMENTATION:
        lines += ["", needs_convnext_hf_sentence(conversion.model.config)]
    return "\n".join(lines)


def _details(conversion: Conversion, entry: ZooEntry | None, resolution: int) -> str:
    arch = conversion.arch
    parameters = parameter_count(conversion.model)
    rows = [
        ("architecture", arch.describe()),
        ("parameters (counted in these weights)", f"{parameters / 1e6:.2f} M"),
        ("resolution", f"{resolution}×{resolution}"),
    ]
    if arch.task != SEGMENTATION:
        # The built-in target's config reads back as ours, which knows the stem and head of every variant.
        config = ConvNextConfig.from_dict(conversion.model.config.to_dict())
        rows.append((f"GFLOPs at {resolution}² (multiply-adds, as in the paper)",
                     f"{count_macs(config, resolution) / 1e9:.2f}"))
    if entry:
        if entry.params_m is not None:
            rows.append(("parameters reported by the authors", f"{entry.params_m} M"))
        if entry.gflops is not None:
            rows.append(("GFLOPs reported by the authors", f"{entry.gflops}"))
        if entry.detector:
            rows = [(name.replace("by the authors", "by the authors (the whole detector)"), value)
                    if name.endswith("by the authors") else (name, value) for name, value in rows]
            rows.append(("detector trained with this backbone", entry.detector))
        rows += [
            ("pre-training data", DATASETS[entry.pretrain_dataset][1] if entry.pretrain_dataset else "—"),
            ("fine-tuning data", DATASETS[entry.finetune_dataset][1] if entry.finetune_dataset else "—"),
            ("EMA weights", "yes" if entry.ema else "no"),
        ]
    if conversion.labels.dataset:
        rows.append(("labels", f"{arch.num_labels} ({conversion.labels.dataset})"))
    return facts_table(rows)


def _results(entry: ZooEntry) -> str:
    if entry.reported_top1 is not None:
        return f"Top-1 accuracy on ImageNet-1k validation at {entry.resolution}²: **{entry.reported_top1}%**."
    if entry.reported_miou is not None:
        return (f"ADE20K validation mIoU: **{entry.reported_miou}** single-scale, "
                f"**{entry.reported_miou_ms_flip}** multi-scale with flip.")
    if entry.reported_box_ap is not None:
        return (f"COCO val2017, the whole {entry.detector} (3× schedule): box AP **{entry.reported_box_ap}**, mask AP "
                f"**{entry.reported_mask_ap}**. This repository holds its backbone only (the neck and heads have no "
                "transformers counterpart and were dropped), so these numbers need a detection head on top of it.")
    if entry.task_note:
        return f"A feature extractor ({entry.task_note}); its authors report no classification accuracy for it."
    return "This checkpoint is pre-trained only (ImageNet-22k); its authors report no validation accuracy for it."


def _verification(conversion: Conversion, provenance: Provenance) -> str:
    # A location with a control character (a newline in a path) is shown as a shell word, on one line.
    location = provenance.location if provenance.location.isprintable() else shell_quote(provenance.location)
    source = f"`{location}`" + (f" (SHA-256 `{provenance.sha256}`)" if provenance.sha256 else "")
    lines = [
        f"Converted from {source}, detected as the **{conversion.layout.name}** layout "
        f"({conversion.layout.description}), with convnext_hf {__version__}:",
        "",
        f"    {provenance.command}",
        "",
        "The architecture was read from the weights themselves, and every tensor of the checkpoint"
        + (" outside the modules listed below" if conversion.dropped else "")
        + " mapped one-to-one onto a parameter of this model (the converter refuses otherwise). Weights are stored as "
        "float32 safetensors.",
    ]
    if conversion.dropped:
        lines += [
            "",
            "Dropped by name, because no transformers model runs them (the detector's neck and heads): only the "
            "backbone and its per-stage output LayerNorms were converted.",
            "",
            *(f"- `{module}` ({count} tensors)" for module, count in conversion.dropped.items()),
        ]
    if provenance.diffs:
        batch, height, width = VERIFY_INPUT_SHAPE
        shape = f"{batch}×{conversion.arch.num_channels}×{height}×{width}"
        listing = ", ".join(f"{name} {diff:.2e}" for name, diff in sorted(provenance.diffs.items()))
        lines += [
            "",
            f"**Verified**: reloaded from the saved files, the model reproduces an independent functional "
            f"re-implementation of the official forward pass run on the source weights, on a fixed {shape} input, "
            f"within {provenance.tolerance:g} (max |difference| per output: {listing}).",
        ]
    else:
        lines += ["", "This conversion was **not** verified against the reference forward pass (`--no-verify`)."]
    if conversion.assumed:
        lines += [
            "",
            "Taken from the checkpoint's config.json, which the weights cannot confirm: "
            f"{', '.join(conversion.assumed)}. The verification ran under these settings: it checks the mapping, "
            "not the settings themselves.",
        ]
    return "\n".join(lines)


def build_model_card(
    conversion: Conversion,
    entry: ZooEntry | None,
    provenance: Provenance,
    resolution: int,
    model_id: str,
    license: str | None = None,
) -> ModelCard:
    """The complete model card of a conversion."""
    title = entry.name if entry else f"ConvNeXt ({conversion.arch.task})"
    data = card_data(conversion, entry, title, license)
    origin = f"the official release of [{entry.source}]({entry.repository})" if entry else "a third-party checkpoint"
    segmentation = conversion.arch.task == SEGMENTATION
    citation = CONVNEXT_CITATION + ("\n\n" + UPERNET_CITATION if segmentation else "")
    paper = "*A ConvNet for the 2020s* (Liu et al., CVPR 2022)"
    if conversion.arch.use_grn:
        citation += "\n\n" + CONVNEXT_V2_CITATION
        paper = "*ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders* (Woo et al., CVPR 2023)"
    sections = [
        f"# {title}",
        f"ConvNeXt, from {paper}, converted from {origin} to "
        "Hugging Face transformers"
        + (", with an UperNet head for semantic segmentation." if segmentation else "")
        + (": the backbone of its detector, without the detection heads." if conversion.dropped else "")
        + ("" if segmentation or conversion.dropped else "."),
        "## Model details",
        _details(conversion, entry, resolution),
        "## Results reported by the authors",
        _results(entry) if entry else "No results are known for this checkpoint.",
        "## Usage",
        usage(conversion, model_id),
        "## Conversion and verification",
        _verification(conversion, provenance),
        "## Citation",
        f"```bibtex\n{citation}\n```",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
