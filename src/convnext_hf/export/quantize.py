"""int8: static post-training quantization with calibration images, and held-out accuracy of float vs int8.

ONNX Runtime's quantizer writes a QDQ graph (QuantizeLinear/DequantizeLinear pairs around the convolutions and
matrix products, weights int8 per output channel, activations uint8 per tensor with ranges from the calibration
images). ONNX Runtime and OpenVINO both run such a graph with int8 kernels. LayerNorms, GELUs and the layers that
produce the outputs stay in float: the first hold the accuracy, the last cost little.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserInputError
from ..images import read_image as read_any_image
from .engines import EngineModel
from .graph import INPUT_NAME, DropMessages

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
BATCH_SIZE = 32
QUANTIZATION_METHOD = "static post-training, QDQ: int8 weights per output channel, uint8 activations (min-max ranges)"


def image_files(directory: str | os.PathLike, flag: str) -> list[Path]:
    """Every image file under `directory` (recursively, by extension), in a stable order."""
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    directory = Path(directory)
    if not directory.is_dir():
        kind = "is a file" if directory.exists() else "does not exist"
        raise UserInputError(f"{flag} {directory} {kind}; pass a folder of images.")
    files = sorted(path for path in directory.rglob("*") if path.suffix.lower() in extensions and path.is_file())
    if not files:
        raise UserInputError(f"{flag} {directory} holds no image files; pass a folder of images (any layout).")
    return files


def read_image(path: Path, flag: str) -> Image.Image:
    """The RGB image in the file, as every command reads one (`images.read_image`); an unreadable file is refused by
    name."""
    try:
        return read_any_image(path)
    except UserInputError as error:
        raise UserInputError(f"{flag}: {error} Remove the file from the folder, or replace it.") from error


def check_images(files: Sequence[Path], flag: str) -> None:
    """Refuse, before any work, a file that an image's extension names but that is not an image (headers only)."""
    for path in files:
        try:
            Image.open(path).close()
        except (OSError, Image.DecompressionBombError) as error:
            raise UserInputError(
                f"{flag}: {path} is not a readable image ({error}); remove it from the folder, or replace it."
            ) from error


def pixel_batches(processor, files: Sequence[Path], flag: str, batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
    """The files through the model's own image processor, `batch_size` at a time, as float32 arrays."""
    for start in range(0, len(files), batch_size):
        images = [read_image(path, flag) for path in files[start : start + batch_size]]
        yield processor(images, return_tensors="np")["pixel_values"].astype(np.float32)


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over pixel batches."""

    def __init__(self, batches: Iterator[np.ndarray]) -> None:
        self.batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def output_layers(onnx_path: Path) -> list[str]:
    """The last convolution or matrix product before each graph output (kept in float)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    found, pending, seen = [], [output.name for output in graph.output], set()
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZED_OPS:
            found.append(node.name)
        else:
            pending.extend(node.input)
    return found


def quantize_int8(float_path: Path, int8_path: Path, calibration_batches: Iterator[np.ndarray]) -> list[str]:
    """Write the int8 QDQ version of the ONNX model at `float_path`, with activation ranges from the calibration
    batches (processed images); return the layers kept in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    kept = output_layers(float_path)
    # The quantizer advises, on the root logger before and after every run, ONNX Runtime's optional pre-processing
    # (shape inference and graph fusions); the recipe above, and the accuracies measured with it, use none.
    advice = DropMessages("Please consider")
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(
            str(float_path),
            str(int8_path),
            CalibrationReader(calibration_batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        logging.getLogger().removeFilter(advice)
    return kept


def labelled_images(directory: str | os.PathLike, label2id: dict[str, int]) -> tuple[list[Path], list[int]]:
    """Images in `directory/<label>/...` with their class ids, refusing folders that name no label of the model."""
    files = image_files(directory, "--validation_dir")
    check_images(files, "--validation_dir")
    labels = [path.relative_to(directory).parts[0] for path in files]
    unknown = sorted(set(labels) - set(label2id))
    if unknown or any(len(path.relative_to(directory).parts) < 2 for path in files):
        raise UserInputError(
            f"{directory} must hold one subfolder per class, named by the model's labels "
            f"({', '.join(list(label2id)[:5])}...); found {', '.join(unknown[:5]) or 'images outside subfolders'}."
        )
    return files, [label2id[label] for label in labels]


def top1_accuracy(engine_model: EngineModel, processor, files: Sequence[Path], labels: Sequence[int]) -> float:
    """Fraction of the images whose highest logit is their label."""
    batches = pixel_batches(processor, files, "--validation_dir")
    predictions = np.concatenate([engine_model(batch)[0].argmax(-1) for batch in batches])
    return float(np.mean(predictions == np.asarray(labels)))
