"""What `convnext-hf export` can be asked for: the engines' file names, the defaults and the options record. Light to
import, so that `convnext-hf export --help` loads neither torch nor the engines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino_model.xml"
ENGINE_FILES = {"onnx": ONNX_FILE, "openvino": OPENVINO_FILE}
ENGINE_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
REPORT_FILE = "export_report.json"
# torch.onnx translates to opset 18 and newer; converting down to older opsets fails on LayerNormalization and Resize.
DEFAULT_OPSET = 18
DTYPES = ("float32", "float16")
DEFAULT_CALIBRATION_IMAGES = 256


@dataclass
class ExportOptions:
    """What `convnext-hf export` was asked for."""

    engine: str
    model_dir: Path
    output_dir: Path
    opset: int = DEFAULT_OPSET
    dtype: str = "float32"
    static_shape: tuple[int, int] | None = None
    quantize: str | None = None
    calibration_dir: Path | None = None
    calibration_images: int | None = None  # DEFAULT_CALIBRATION_IMAGES unless given
    validation_dir: Path | None = None
    validation_annotations: Path | None = None
    tolerance: float | None = None
    overwrite: bool = False
