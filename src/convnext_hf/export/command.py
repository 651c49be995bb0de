"""`convnext-hf export`: a saved ConvNeXt folder to ONNX or OpenVINO, checked against PyTorch.

    convnext-hf export onnx --model DIR --output_dir OUTPUT_DIR
    convnext-hf export openvino --model DIR --output_dir OUTPUT_DIR [--static_shape H W]
    convnext-hf export onnx --model DIR --output_dir OUTPUT_DIR --quantize int8 --calibration_dir IMAGES
                            [--validation_dir DIR]
    convnext-hf export onnx --model DETECTOR --output_dir OUTPUT_DIR
                            [--validation_dir IMAGES --validation_annotations F.json]

(OUTPUT_DIR may also follow the engine without --output_dir, the older spelling.)

The export runs once in its engine against PyTorch on two random inputs (with dynamic axes, of two different sizes)
and is refused if they disagree beyond the tolerance. A detector (a folder of `convnext-hf train --task
object-detection`) is exported at its processor's size and checked by its detections instead, on --validation_dir
with --validation_annotations (COCO; adds the mAP) or on generated scenes: matched boxes IoU >= 0.99, scores within
1e-3, mAP within 0.002 (docs/deployment.md, Detectors). OUTPUT_DIR gets the model file (model.onnx, or
openvino_model.xml/.bin), config.json, preprocessor_config.json and export_report.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..cli import CommandParser
from ..errors import UserInputError
from .options import DEFAULT_CALIBRATION_IMAGES, DEFAULT_OPSET, DTYPES, ENGINE_FILES, REPORT_FILE, ExportOptions


def parse_args(argv: Sequence[str]) -> ExportOptions:
    """Command-line options (underscore spelling; the dashed one is accepted too)."""
    parser = CommandParser(
        prog="convnext-hf export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("engine", choices=list(ENGINE_FILES), help="onnx (ONNX Runtime) or openvino")
    parser.add_argument("output_dir_positional", nargs="?", type=Path, metavar="OUTPUT_DIR",
                        help="the older spelling of --output_dir")
    parser.add_argument("--output_dir", "--output", type=Path,
                        help="folder to write (refused if not empty, unless --overwrite)")
    parser.add_argument("--model", "--model_name_or_path", dest="model_dir", type=Path, required=True,
                        help="a folder written by save_pretrained or convnext-hf convert/train")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float16 halves the weights (for GPU targets); parity tolerance 1e-2")
    parser.add_argument("--static_shape", type=int, nargs=2, metavar=("H", "W"),
                        help="fix height and width (batch stays dynamic)")
    parser.add_argument("--quantize", choices=["int8"], help="static int8 quantization (needs --calibration_dir)")
    parser.add_argument("--calibration_dir", type=Path,
                        help="images for the int8 ranges, through the model's own processor (any layout)")
    parser.add_argument("--calibration_images", type=int,
                        help=f"use at most this many calibration images (default {DEFAULT_CALIBRATION_IMAGES})")
    parser.add_argument("--validation_dir", type=Path,
                        help="held-out images in one subfolder per label: report float32 vs int8 top-1 accuracy; "
                        "for a detector, the check images (with --validation_annotations)")
    parser.add_argument("--validation_annotations", type=Path,
                        help="a detector's check: the COCO file of --validation_dir's boxes (the check then also "
                        "compares the COCO mAP)")
    parser.add_argument("--tolerance", type=float, help="parity tolerance (default 1e-5 float32, 1e-2 float16)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT_DIR")
    args = parser.parse_intermixed_args(argv)
    positional = args.__dict__.pop("output_dir_positional")
    if positional is not None and args.output_dir is not None and positional != args.output_dir:
        raise UserInputError(f"Two output folders: {positional} and --output_dir {args.output_dir}; give one.")
    args.output_dir = args.output_dir or positional
    if args.output_dir is None:
        parser.error("--output_dir is required: the folder to write the exported model to.")
    args.static_shape = tuple(args.static_shape) if args.static_shape else None
    return ExportOptions(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Export, print the parity (and int8 accuracy), return 0."""
    import sys

    options = parse_args(sys.argv[1:] if argv is None else argv)
    from transformers.utils import logging as transformers_logging

    from ..atomic import check_apart

    check_apart(options.output_dir, {"--model": options.model_dir, "--calibration_dir": options.calibration_dir,
                                     "--validation_dir": options.validation_dir,
                                     "--validation_annotations": options.validation_annotations})  # fmt: skip

    from .exporter import export

    transformers_logging.disable_progress_bar()  # the weights load in a blink; a bar would only clutter the log
    report = export(options)
    parity = report["parity"]
    print(
        f"{options.output_dir}: {report['task']} in {options.engine} ({report['dtype']}); parity with PyTorch: "
        f"{parity['summary']}; report in {REPORT_FILE}."
    )
    validation = report.get("int8", {}).get("validation")
    if validation:
        print(
            f"held-out top-1 on {validation['images']} images: float32 {validation['float32_top1']:.2%}, "
            f"int8 {validation['int8_top1']:.2%}."
        )
    return 0
