"""Export one saved folder to an engine: graph, optional int8, parity check, and the folder optimum loads."""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..atomic import atomic_directory, check_output_dir
from ..errors import UserInputError
from ..finite import check_before_saving
from ..image_processing_convnext import MAX_RESOLUTION
from ..model_folder import load_image_processor
from . import parity
from .engines import ENGINE_FILES, ENGINE_PACKAGES, ONNX_FILE, EngineModel, engine_model, install, require_engine
from .graph import DYNAMIC_AXES, INPUT_NAME, Exportable, export_onnx, load_exportable
from .options import DEFAULT_CALIBRATION_IMAGES, DEFAULT_OPSET, REPORT_FILE, ExportOptions
from .quantize import (
    QUANTIZATION_METHOD,
    check_images,
    image_files,
    labelled_images,
    pixel_batches,
    quantize_int8,
    top1_accuracy,
)

# Besides the model file: what optimum's ORT/OpenVINO model classes read, and the remote code config.json points to.
COPIED_FILES = ("config.json", "preprocessor_config.json", "*.py")


class ParityError(UserInputError):
    """The exported model disagrees with PyTorch beyond the tolerance; nothing was written."""


def check_options(options: ExportOptions) -> None:
    """Refuse contradictory or incomplete options before any work."""
    if options.quantize and options.calibration_dir is None:
        raise UserInputError("--quantize int8 needs --calibration_dir IMAGES: a folder of images like your inputs.")
    if options.quantize and options.dtype != "float32":
        raise UserInputError("--quantize int8 starts from the float32 model; leave out --dtype.")
    calibration_flags = (("--calibration_dir", options.calibration_dir),
                         ("--calibration_images", options.calibration_images))  # fmt: skip
    unused = [flag for flag, value in calibration_flags if value is not None]
    if unused and not options.quantize:
        verb, them = ("serves", "it") if len(unused) == 1 else ("serve", "them")
        raise UserInputError(f"{', '.join(unused)} {verb} int8 quantization; add --quantize int8, or leave {them} out.")
    if options.opset < DEFAULT_OPSET:
        raise UserInputError(f"--opset {options.opset} is too old: the exporter writes opset {DEFAULT_OPSET} or newer.")
    newest = newest_opset()
    if options.opset > newest:
        raise UserInputError(f"--opset {options.opset} is newer than the installed onnx knows (up to {newest}); "
                             f"choose an opset from {DEFAULT_OPSET} to {newest}.")  # fmt: skip
    if options.calibration_images is not None and options.calibration_images < 1:
        raise UserInputError(f"--calibration_images must be at least 1, got {options.calibration_images}.")
    if options.static_shape is not None and min(options.static_shape) < 1:
        raise UserInputError(f"--static_shape takes a positive height and width, got {options.static_shape}.")
    if options.static_shape is not None and max(options.static_shape) > MAX_RESOLUTION:
        raise UserInputError(
            f"--static_shape {options.static_shape[0]} {options.static_shape[1]} is over the limit of "
            f"{MAX_RESOLUTION} pixels a side (the image processor's); give a height and width up to {MAX_RESOLUTION}."
        )
    if options.tolerance is not None and not 0 <= options.tolerance < float("inf"):
        raise UserInputError(f"--tolerance is a relative difference, a number >= 0; got {options.tolerance}.")
    check_output_dir(options.output_dir, options.overwrite)


def newest_opset() -> int:
    """The newest ONNX opset the installed onnx package defines."""
    import onnx

    return onnx.defs.onnx_opset_version()


def check_form_options(options: ExportOptions, exportable: Exportable) -> ExportOptions:
    """Refuse the options the folder's kind does not take; a fixed-size graph gets the processor's size as its
    static shape. Returns the options to export with."""
    if exportable.check is None:
        if options.validation_annotations is not None:
            raise UserInputError(f"--validation_annotations serves the detection check of detectors; "
                                 f"{options.model_dir} is a {exportable.task} model: leave it out.")  # fmt: skip
        if options.validation_dir is not None and not options.quantize:
            raise UserInputError("--validation_dir serves int8 quantization; add --quantize int8, or leave it out.")
        return options
    if options.quantize:
        raise UserInputError(f"--quantize int8: {exportable.int8_refusal}; export {options.model_dir} in float32.")
    if options.tolerance is not None:
        raise UserInputError(
            f"--tolerance sets the raw-tensor parity, which {exportable.task} exports report but are not held to "
            "(they are checked by their predictions, at fixed tolerances); leave it out."
        )
    if not exportable.fixed_size:
        return options
    size = (exportable.image_size, exportable.image_size)
    if options.static_shape not in (None, size):
        raise UserInputError(
            f"--static_shape {options.static_shape[0]} {options.static_shape[1]}: the {exportable.task} graph takes "
            f"the images its processor makes, {size[0]}×{size[1]}; leave --static_shape out."
        )
    return replace(options, static_shape=size)


def check_static_shape(options: ExportOptions, exportable: Exportable) -> None:
    """Refuse a --static_shape smaller than the model's total stride: its last stage would have no pixels."""
    if options.static_shape is not None and min(options.static_shape) < exportable.total_stride:
        raise UserInputError(
            f"--static_shape {options.static_shape[0]} {options.static_shape[1]} is smaller than the model's total "
            f"stride {exportable.total_stride} (its last stage would be empty); give a height and width of at least "
            f"{exportable.total_stride}."
        )


def calibration_files(options: ExportOptions) -> list[Path]:
    """At most --calibration_images image files of --calibration_dir, spread over the sorted files (so that a folder
    per class contributes every class, not the first ones only); each refused by name unless it opens as an image."""
    files = image_files(options.calibration_dir, "--calibration_dir")
    count = options.calibration_images or DEFAULT_CALIBRATION_IMAGES
    chosen = files[:: max(1, len(files) // count)][:count]
    check_images(chosen, "--calibration_dir")
    return chosen


def export(options: ExportOptions) -> dict:
    """Write the exported folder at `options.output_dir` if it passes the parity check; return its report."""
    check_options(options)
    require_engine(options.engine)
    calibration = calibration_files(options) if options.quantize else []
    exportable = load_exportable(options.model_dir)
    options = check_form_options(options, exportable)
    check_static_shape(options, exportable)
    validation = None
    if options.validation_dir is not None and exportable.check is None:
        if not exportable.scores_top1:
            raise UserInputError(f"--validation_dir scores classifiers (top-1); {options.model_dir} is a "
                                 f"{exportable.task} model: leave it out.")  # fmt: skip
        validation = labelled_images(options.validation_dir, exportable.model.config.label2id)
    check_before_saving(exportable.model, options.output_dir)
    # The images (and boxes) a prediction check runs on, read and checked before any work.
    check_inputs = _check_hooks(exportable).check_data(options, exportable) if exportable.check else None
    with atomic_directory(options.output_dir, overwrite=options.overwrite) as staging:
        return _export_into(staging, options, exportable, calibration, validation, check_inputs)


def _check_hooks(exportable: Exportable) -> ModuleType:
    """The module of the folder's prediction check (named by its task's export form)."""
    return importlib.import_module(exportable.check)


def _export_into(
    staging: Path,
    options: ExportOptions,
    exportable: Exportable,
    calibration: list[Path],
    validation: tuple[list[Path], list[int]] | None,
    check_inputs: Any = None,
) -> dict:
    """The work of `export`, writing into the staging folder."""
    height, width = options.static_shape or (exportable.image_size, exportable.image_size)
    example = torch.randn(2, exportable.num_channels, height, width)
    report = {
        "engine": options.engine,
        "task": exportable.task,
        "source": str(options.model_dir),
        "file": ENGINE_FILES[options.engine],
        "input": {INPUT_NAME: ["batch", exportable.num_channels, *(options.static_shape or ("height", "width"))]},
        "outputs": list(exportable.output_names),
        "dynamic_axes": None if options.static_shape else list(DYNAMIC_AXES.values()),
        "static_shape": list(options.static_shape) if options.static_shape else None,
        "opset": options.opset,
        "dtype": "int8" if options.quantize else options.dtype,
        "versions": {package: version(package) for package in ("torch", "onnx", ENGINE_PACKAGES[options.engine])},
    }
    with tempfile.TemporaryDirectory(dir=staging.parent) as scratch:
        scratch = Path(scratch)
        float_onnx = scratch / ONNX_FILE
        # OpenVINO keeps float16 as a storage format of the float32 graph's weights (its CPU plugin computes in f32);
        # ONNX Runtime runs a float16 graph, traced from the model in float16.
        half_graph = options.dtype == "float16" and options.engine == "onnx"
        traced = load_exportable(options.model_dir, torch.float16) if half_graph else exportable
        export_onnx(traced, example, float_onnx, options.opset, dynamic=options.static_shape is None)
        # The float model is the result unless int8 is asked for; then it stays aside as the accuracy reference.
        float_dir = scratch / "float" if options.quantize else staging
        float_model = engine_model(options.engine, install(options.engine, float_onnx, float_dir, options.dtype))
        if exportable.check is None:
            report["parity"] = _check_parity(exportable, float_model, options)
        else:
            report["parity"] = _check_predictions(exportable, float_model, options, check_inputs)
        if options.quantize:
            report["int8"] = _quantize(staging, scratch, float_onnx, float_model, options, calibration, validation)
    for pattern in COPIED_FILES:
        for path in Path(options.model_dir).glob(pattern):
            shutil.copy2(path, staging / path.name)
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _check_parity(exportable: Exportable, float_model: EngineModel, options: ExportOptions) -> dict:
    """Run the float export against PyTorch; refuse it beyond the tolerance."""
    tolerance = options.tolerance if options.tolerance is not None else parity.TOLERANCES[options.dtype]
    shapes = parity.parity_shapes(exportable.image_size, options.static_shape, exportable.total_stride)
    results = parity.measure_parity(exportable, float_model, shapes, exportable.num_channels)
    worst = max(max(result["max_relative_difference"].values()) for result in results)
    if not worst <= tolerance:
        raise ParityError(
            f"the {options.engine} export of {options.model_dir} disagrees with PyTorch: max relative difference "
            f"{worst:.2e} > tolerance {tolerance:.0e} ({results}). Nothing was written. Try another --opset, or "
            "report it with the model's config.json."
        )
    return {
        "definition": parity.DEFINITION,
        "summary": f"max relative difference {worst:.2e} (tolerance {tolerance:.0e})",
        "tolerance": tolerance,
        "max_relative_difference": worst,
        "inputs": results,
    }


def _check_predictions(exportable: Exportable, float_model: EngineModel, options: ExportOptions,
                       check_inputs: Any) -> dict:  # fmt: skip
    """Run the float export against PyTorch through the task's own check; refuse it with the check's reasons."""
    result = _check_hooks(exportable).check_export(exportable, float_model, check_inputs)
    failures = result.pop("failures")
    if failures:
        raise ParityError(
            f"the {options.engine} export of {options.model_dir} does not reproduce PyTorch's predictions: "
            f"{'; '.join(failures)}. Nothing was written."
        )
    return result


def _quantize(
    staging: Path,
    scratch: Path,
    float_onnx: Path,
    float_model: EngineModel,
    options: ExportOptions,
    calibration: list[Path],
    validation: tuple[list[Path], list[int]] | None,
) -> dict:
    """Quantize with the calibration images, write the int8 model, and score float and int8 on validation images."""
    processor = load_image_processor(options.model_dir)
    int8_onnx = scratch / "int8" / ONNX_FILE
    int8_onnx.parent.mkdir()
    kept = quantize_int8(float_onnx, int8_onnx, pixel_batches(processor, calibration, "--calibration_dir"))
    int8_model = engine_model(options.engine, install(options.engine, int8_onnx, staging, "int8"))
    result = {"method": QUANTIZATION_METHOD, "calibration_images": len(calibration), "kept_in_float": kept}
    if validation is not None:
        files, labels = validation
        result["validation"] = {
            "images": len(files),
            "float32_top1": top1_accuracy(float_model, processor, files, labels),
            "int8_top1": top1_accuracy(int8_model, processor, files, labels),
        }
    return result
