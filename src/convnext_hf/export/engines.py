"""The two inference engines an export targets: loading a written folder and running it on numpy inputs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from .graph import INPUT_NAME
from .options import ENGINE_FILES, ENGINE_PACKAGES, ONNX_FILE, OPENVINO_FILE

__all__ = ["ENGINE_FILES", "ENGINE_PACKAGES", "ONNX_FILE", "OPENVINO_FILE"]
# OpenVINO runs float32 models in bfloat16 on CPUs with native bfloat16 (AVX-512 BF16, AMX) unless told otherwise.
OPENVINO_FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}

EngineModel = Callable[[np.ndarray], list[np.ndarray]]


def require_engine(engine: str) -> None:
    """Refuse an engine whose Python package is missing, naming the install command."""
    try:
        __import__(ENGINE_PACKAGES[engine])
        __import__("onnx")
    except ImportError as error:
        raise UserInputError(
            f"exporting to {engine} needs {error.name}; install the engines with: pip install 'convnext-hf[export]'"
        ) from None


def onnxruntime_model(path: str | os.PathLike, threads: int | None = None) -> EngineModel:
    """An ONNX Runtime CPU session on the ONNX file at `path`, as a function of `pixel_values`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda pixel_values: session.run(None, {INPUT_NAME: pixel_values})


def openvino_model(
    path: str | os.PathLike, config: dict[str, str] | None = None, threads: int | None = None
) -> EngineModel:
    """An OpenVINO CPU model compiled from the IR or ONNX file at `path` (float32 precision unless `config` says
    otherwise), as a function of `pixel_values`."""
    import openvino

    config = dict(OPENVINO_FLOAT32 if config is None else config)
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(pixel_values: np.ndarray) -> list[np.ndarray]:
        results = request.infer({INPUT_NAME: pixel_values})
        return [np.array(results[output]) for output in compiled.outputs]

    return run


def engine_model(engine: str, path: str | os.PathLike) -> EngineModel:
    """Run the model file at `path` in `engine` (OpenVINO in float32)."""
    return onnxruntime_model(path) if engine == "onnx" else openvino_model(path)


def load_engine_model(folder: str | os.PathLike, engine: str) -> EngineModel:
    """Run an exported folder in its engine (OpenVINO in float32)."""
    return engine_model(engine, Path(folder) / ENGINE_FILES[engine])


def install(engine: str, onnx_path: Path, directory: Path, dtype: str) -> Path:
    """Put the ONNX model at `onnx_path` into `directory` as `engine`'s file (copied, or converted to OpenVINO IR with
    float16 weights when `dtype` is float16); return the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    if engine == "openvino":
        path = directory / OPENVINO_FILE
        onnx_to_openvino(onnx_path, path, compress_to_fp16=dtype == "float16")
        return path
    # Weights of models over 2 GB live beside the graph, named after it; they go together.
    for part in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        if part.exists():
            shutil.copy2(part, directory / part.name)
    return directory / onnx_path.name


def onnx_to_openvino(onnx_path: Path, xml_path: Path, compress_to_fp16: bool) -> None:
    """Convert an ONNX file to OpenVINO IR (`.xml` + `.bin`); float16 weights only when asked."""
    import openvino

    # save_model halves the weights by default; a float32 export must stay float32 to match PyTorch.
    openvino.save_model(openvino.convert_model(onnx_path), xml_path, compress_to_fp16=compress_to_fp16)
