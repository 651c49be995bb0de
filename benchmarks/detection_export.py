"""An exported detector's speed against PyTorch's, in one run: `convnext-hf export` of an RT-DETR folder to ONNX
Runtime and OpenVINO (each passing its detection check first), then the graph's forward and PyTorch's on the same
processed images, timed interleaved (one call of each in turn, so that load from other processes hits all alike)
with the same number of threads.

    PYTHONPATH=src python benchmarks/detection_export.py --output_dir /tmp/det-export            # RT-DETR on atto, 640²
    PYTHONPATH=src python benchmarks/detection_export.py --model my-detector --output_dir /tmp/det-export

Without --model it times a new RT-DETR on ConvNeXt-atto sized as `convnext-hf train --task object-detection
--variant atto` sizes it (d_model 128, 3 decoder layers, 100 queries) at --image_size, trained for --steps steps on
generated scenes so that the check runs on real detections. Prints a markdown table and writes
`<output_dir>/detection_export.json` (timings, the check's numbers, the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from benchmark import environment, summarize, time_interleaved

from convnext_hf import ConvNextConfig
from convnext_hf.cli import CommandParser, run_command
from convnext_hf.export.engines import ONNX_FILE, OPENVINO_FILE, onnxruntime_model, openvino_model
from convnext_hf.export.exporter import ExportOptions, export
from convnext_hf.tasks.detection.hooks import prepare_for_saving
from convnext_hf.tasks.detection.model import build_detection_processor, new_detector
from convnext_hf.train import parse_args as train_args
from convnext_hf.train.shapes import SHAPES, draw_detection_scene

ENGINES = ("onnx", "openvino")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = CommandParser(
        prog="detection_export.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="a detector folder (default: a new RT-DETR on ConvNeXt-atto)")
    parser.add_argument("--image_size", type=int, default=640, help="side of the new detector's images")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the new detector")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iters", type=int, default=20, help="timed calls of each implementation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--threads", type=int, help="threads of every implementation (default: torch's)")
    parser.add_argument("--output_dir", type=Path, required=True)
    return parser.parse_args(argv)


def scenes(count: int, side: int, seed: int) -> tuple[list, list[list[tuple[str, list[int]]]]]:
    """Generated scenes of shapes with their boxes."""
    rng = np.random.default_rng(seed)
    drawn = [draw_detection_scene(rng, side) for _ in range(count)]
    return [image for image, _ in drawn], [objects for _, objects in drawn]


def new_trained_detector(folder: Path, side: int, steps: int) -> Path:
    """An RT-DETR on ConvNeXt-atto as `train --variant atto` builds it, trained `steps` steps of 2 of 16 scenes."""
    torch.manual_seed(0)
    model = new_detector("rt_detr", ConvNextConfig.from_variant("atto"), list(SHAPES))
    flags = ["--task", "object-detection", "--variant", "atto", "--image_size", str(side), "--output_dir", "x"]
    processor = build_detection_processor(train_args(flags).model, model)
    images, objects = scenes(16, side, seed=1)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    labels = [
        {"class_labels": torch.tensor([SHAPES.index(shape) for shape, _ in found]),
         "boxes": torch.tensor([[(x + w / 2) / side, (y + h / 2) / side, w / side, h / side]
                                for _, (x, y, w, h) in found], dtype=torch.float32)}
        for found in objects
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = slice(2 * step % 16, 2 * step % 16 + 2)
        loss = model(pixel_values=pixel_values[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    prepare_for_saving(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> dict:
    """Export, check, time; print the table and write the results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or new_trained_detector(args.output_dir / "detector", args.image_size, args.steps)
    model = transformers.AutoModelForObjectDetection.from_pretrained(str(model_dir)).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(str(model_dir))
    checks, engines = {}, {}
    for engine in ENGINES:
        folder = args.output_dir / engine
        report = export(ExportOptions(engine, model_dir, folder, overwrite=True))
        checks[engine] = {key: value for key, value in report["parity"].items() if key != "definition"}
        engines[engine] = (onnxruntime_model(folder / ONNX_FILE, threads) if engine == "onnx"
                           else openvino_model(folder / OPENVINO_FILE, threads=threads))  # fmt: skip
    rows = []
    for batch in args.batch_sizes:
        images, _ = scenes(batch, args.image_size, seed=2)
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        array = pixel_values.numpy()

        def pytorch(pixel_values: torch.Tensor = pixel_values) -> object:
            with torch.inference_mode():
                return model(pixel_values=pixel_values)

        calls = {"pytorch": pytorch,
                 **{name: (lambda run=run, array=array: run(array)) for name, run in engines.items()}}  # fmt: skip
        times = time_interleaved(calls, torch.device("cpu"), args)
        base = summarize(times["pytorch"], batch)
        for name, seconds in times.items():
            row = {"implementation": name, "batch": batch, **summarize(seconds, batch)}
            row["speedup_vs_pytorch"] = base["median_ms"] / row["median_ms"]
            rows.append(row)
    results = {"model": str(model_dir), "image_size": args.image_size, "threads": threads, "rows": rows,
               "checks": checks, "environment": environment()}  # fmt: skip
    (args.output_dir / "detection_export.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"| implementation | batch | median ms | images/s | × PyTorch |  ({threads} threads, {args.image_size}²)")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['implementation']} | {row['batch']} | {row['median_ms']:.1f} | {row['images_per_s']:.1f} | "
              f"{row['speedup_vs_pytorch']:.2f} |")  # fmt: skip
    for engine, check in checks.items():
        print(f"{engine}: {check['summary']}")
    return results


if __name__ == "__main__":
    sys.exit(run_command("detection_export.py", main, sys.argv[1:]))
