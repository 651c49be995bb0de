"""Peak memory for hostile inputs of bounded size: each case runs in a fresh process, and the growth of its peak
resident memory (`ru_maxrss`, a high-water mark) from just before the input is read (the imports' peak, about 0.4
GB) to just after it is accepted or refused is bounded.

About 10 MB of annotations or configuration, or an image file that claims 100000² pixels, stays under 1 GB; the
largest image the decoder accepts (`MAX_IMAGE_PIXELS`, 89.5 million pixels: 9000², 100 KB as a PNG) peaks near 1.1 GB
through `read_image` and the processor, bounded by that pixel limit rather than the file's bytes (docs/security.md).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from helpers import png_claiming

MB = 1024 * 1024
# What the fresh process runs: `setup` (imports, not measured), then `action` on the input, measured.
RUNNER = textwrap.dedent("""
    import json, resource, sys
    from convnext_hf.errors import UserInputError
    {setup}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        {action}
        outcome = "accepted"
    except UserInputError as error:
        outcome = "refused: " + str(error)[:200]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"peak_mb": (after - before) / 1024, "before_mb": before / 1024, "outcome": outcome}}))
""")


def _peak(setup: str, action: str) -> dict:
    script = RUNNER.format(setup=setup, action=action)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _coco_10mb(path) -> None:
    """50000 images and 50000 annotations, every one of them wrong somewhere: about 10 MB."""
    images = [{"id": index, "file_name": f"../missing/{index}.png", "width": "wide", "height": 30}
              for index in range(50_000)]  # fmt: skip
    annotations = [{"id": index, "image_id": index, "category_id": 1, "bbox": [float("nan"), "a", 10, 10]}
                   for index in range(50_000)]  # fmt: skip
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))


def _config_10mb(folder) -> None:
    """A classifier folder whose config.json asks for 100000 classes of 30-character names on a wide trunk."""
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification

    ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    names = {str(index): f"{index:08d}" + "x" * 22 for index in range(100_000)}
    config.update({"hidden_sizes": [64, 128, 256, 8192], "depths": [1, 1, 1, 3], "num_labels": 100_000,
                   "id2label": names, "label2id": {name: int(index) for index, name in names.items()}})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))


def _detector_at_its_bounds(folder) -> None:
    import transformers

    from convnext_hf import ConvNextConfig
    from convnext_hf.tasks.detection.model import new_detector

    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    new_detector("rt_detr", backbone, ["a", "b"], {"num_queries": 10, "num_denoising": 5}).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({"d_model": 8192, "encoder_layers": 64, "decoder_layers": 64, "encoder_ffn_dim": 16384,
                   "decoder_ffn_dim": 16384})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    assert transformers.AutoConfig.from_pretrained(folder).d_model == 8192


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "limit_mb", "expected"),
    [
        ("coco_10mb", 1024, "refused: --train_annotations"),
        ("nested_10mb", 1024, "refused: --train_annotations"),
        ("config_10mb", 1024, "refused: --model"),
        ("detector_at_its_bounds", 1024, "refused: --model"),
        ("bomb_png", 1024, "refused: "),
        ("largest_allowed_image", 1536, "accepted"),
    ],
)
def test_peak_memory_of_bounded_hostile_inputs(tmp_path, case, limit_mb, expected):
    setup, action = "", ""
    path = tmp_path / "input"
    if case in ("coco_10mb", "nested_10mb"):
        path = tmp_path / "annotations.json"
        if case == "coco_10mb":
            _coco_10mb(path)
        else:
            path.write_text("[" * 5_000_000 + "]" * 5_000_000)
        setup = "from convnext_hf.tasks.detection.annotations import read_coco"
        action = f"read_coco({str(path)!r}, 'train', {str(tmp_path)!r})"
    elif case in ("config_10mb", "detector_at_its_bounds"):
        (_config_10mb if case == "config_10mb" else _detector_at_its_bounds)(path)
        model_class = "AutoModelForImageClassification" if case == "config_10mb" else "RTDetrForObjectDetection"
        setup = "import transformers; from convnext_hf.model_folder import load_model_folder"
        action = f"load_model_folder(transformers.{model_class}, {str(path)!r})"
    else:
        path = tmp_path / "image.png"
        if case == "bomb_png":
            path.write_bytes(png_claiming(100_000, 100_000))
        else:
            Image.new("L", (9000, 9000), 7).save(path)
        setup = ("from convnext_hf import ConvNextHFImageProcessor; from convnext_hf.images import read_image; "
                 "processor = ConvNextHFImageProcessor(size={'shortest_edge': 224})")  # fmt: skip
        action = f"assert processor(read_image({str(path)!r}), return_tensors='pt')['pixel_values'].shape[-1] == 224"
    size_mb = sum(file.stat().st_size for file in tmp_path.rglob("*") if file.is_file()) / MB
    assert size_mb <= 11
    measured = _peak(setup, action)
    print(f"{case}: input {size_mb:.1f} MB, peak {measured['before_mb']:.0f} MB after the imports, grown by "
          f"{measured['peak_mb']:.0f} MB: {measured['outcome'][:60]}")
    assert measured["outcome"].startswith(expected), measured
    assert measured["peak_mb"] < limit_mb, measured
