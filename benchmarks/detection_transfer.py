"""The detection demo's command on scenes the demo never draws: does it carry over to other data?

`convnext-hf demo --task object-detection` prints the one `convnext-hf train` command line it runs. This swaps only
its data flags (`--train_dir --train_annotations --validation_dir --validation_annotations`) for COCO folders of
four other families of synthetic scenes, trains, and scores each detector on its held-out scenes under COCO's
protocol (every detection, up to 100 per image) twice: through `pipeline("object-detection")` and through
`convnext-hf evaluate`; and, for comparison with the numbers measured before, as they were scored then: only the
detections above the pipeline's 0.5 threshold.

| family | shapes (classes) | image side | object side | objects | background |
|---|---|---|---|---|---|
| A | star, cross, hexagon | 96 | 12-40% | 1-4 | two-colour linear gradient |
| B | ellipse, diamond, cross (aspect 0.6-1.4) | 128 | 10-35% | 1-4 | smoothed colour-noise texture |
| C | star, ellipse, hexagon, diamond | 80 | 15-35% | 1-3 | solid, gradient or texture |
| D | triangle, ring, pentagon, star | 160 | 8-25% | 1-6 | gradient or texture |

Objects take random colours at least 80 RGB from the background under them (so only the form gives the class), and
every pixel gets ±10 noise; 800 training and 100 held-out scenes per family.

    PYTHONPATH=src python benchmarks/detection_transfer.py --output_dir /tmp/transfer            # all four
    PYTHONPATH=src python benchmarks/detection_transfer.py --output_dir /tmp/transfer --families A

Prints a markdown table and writes `<output_dir>/transfer.json`. Each family trains for the demo's minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from convnext_hf.cli import run_command
from convnext_hf.demo import DemoSettings
from convnext_hf.evaluation_command import main as evaluate_main
from convnext_hf.tasks import TASKS
from convnext_hf.tasks.detection.demo import detection_arguments, held_out_detections
from convnext_hf.tasks.detection.metrics import coco_metrics
from convnext_hf.tasks.detection.scoring import PIPELINE_THRESHOLD
from convnext_hf.train import main as train_main
from convnext_hf.train.shapes import write_coco_folder

TRAIN_SCENES, HELD_OUT_SCENES = 800, 100
MIN_CONTRAST = 80
NOISE = 10


@dataclass(frozen=True)
class Family:
    """One kind of synthetic detection scene."""

    shapes: tuple[str, ...]
    side: int
    object_side: tuple[float, float]
    max_objects: int
    backgrounds: tuple[str, ...]
    aspect: tuple[float, float] = (0.8, 1.25)


FAMILIES = {
    "A": Family(("star", "cross", "hexagon"), 96, (0.12, 0.4), 4, ("gradient",), (1.0, 1.0)),
    "B": Family(("ellipse", "diamond", "cross"), 128, (0.1, 0.35), 4, ("texture",), (0.6, 1.4)),
    "C": Family(("star", "ellipse", "hexagon", "diamond"), 80, (0.15, 0.35), 3, ("solid", "gradient", "texture")),
    "D": Family(("triangle", "ring", "pentagon", "star"), 160, (0.08, 0.25), 6, ("gradient", "texture")),
}


def _regular(box: tuple[float, float, float, float], corners: int, start: float) -> list[tuple[float, float]]:
    """The corners of a regular polygon stretched to fill `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    radius_x, radius_y = (right - left) / 2, (bottom - top) / 2
    angles = [start + 2 * math.pi * k / corners for k in range(corners)]
    return [(centre_x + radius_x * math.cos(a), centre_y + radius_y * math.sin(a)) for a in angles]


def _outline(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """The polygon of a shape filling `box`."""
    left, top, right, bottom = box
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    if shape == "star":
        points = _regular(box, 10, -math.pi / 2)
        return [p if k % 2 == 0 else (centre_x + 0.45 * (p[0] - centre_x), centre_y + 0.45 * (p[1] - centre_y))
                for k, p in enumerate(points)]  # fmt: skip
    if shape == "cross":
        arm_x, arm_y = (right - left) / 6, (bottom - top) / 6
        x0, x1, y0, y1 = centre_x - arm_x, centre_x + arm_x, centre_y - arm_y, centre_y + arm_y
        return [(x0, top), (x1, top), (x1, y0), (right, y0), (right, y1), (x1, y1), (x1, bottom), (x0, bottom),
                (x0, y1), (left, y1), (left, y0), (x0, y0)]  # fmt: skip
    if shape == "diamond":
        return [(centre_x, top), (right, centre_y), (centre_x, bottom), (left, centre_y)]
    if shape == "triangle":
        return [(centre_x, top), (right, bottom), (left, bottom)]
    corners = {"hexagon": (6, 0.0), "pentagon": (5, -math.pi / 2)}[shape]
    return _regular(box, *corners)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: object, hole: object) -> None:
    """A shape filling `box` (right and bottom inclusive, as PIL draws); a ring's hole gets `hole`."""
    if shape in ("ellipse", "ring"):
        draw.ellipse(box, fill=fill)
        if shape == "ring":
            inset_x, inset_y = (box[2] - box[0]) * 0.3, (box[3] - box[1]) * 0.3
            draw.ellipse((box[0] + inset_x, box[1] + inset_y, box[2] - inset_x, box[3] - inset_y), fill=hole)
        return
    draw.polygon(_outline(shape, box), fill=fill)


def _background(rng: np.random.Generator, side: int, kind: str) -> np.ndarray:
    """A solid colour, a two-colour linear gradient at a random angle, or smoothed colour noise, as float RGB."""
    if kind == "solid":
        return np.ones((side, side, 3)) * rng.integers(0, 256, 3)
    if kind == "gradient":
        start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * math.pi)
        rows, columns = np.mgrid[0:side, 0:side] / side
        ramp = np.cos(angle) * columns + np.sin(angle) * rows
        ramp = ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-9))[..., None]
        return start * (1 - ramp) + end * ramp
    coarse = rng.normal(0, 1, (side // 8, side // 8, 3))
    coarse = ((coarse - coarse.min()) / (np.ptp(coarse) + 1e-9) * 255).astype(np.uint8)
    blotches = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC), dtype=float) / 255
    return rng.integers(40, 220, 3) + (blotches - 0.5) * rng.uniform(60, 120)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, ...]:
    """A random colour at least MIN_CONTRAST (Euclidean RGB) from the mean colour under the object."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            return tuple(int(value) for value in colour)


def _scene(rng: np.random.Generator, family: Family) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One scene and its objects as (class index, tight COCO box)."""
    side = family.side
    background = _background(rng, side, family.backgrounds[int(rng.integers(len(family.backgrounds)))])
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    instances = Image.new("L", (side, side), 0)
    placed: list[tuple[int, int, int, int]] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(1, family.max_objects + 1))):
        size, aspect = side * rng.uniform(*family.object_side), rng.uniform(*family.aspect)
        width = min(side - 1, max(6, int(size * math.sqrt(aspect))))
        height = min(side - 1, max(6, int(size / math.sqrt(aspect))))
        for _attempt in range(30):
            left, top = int(rng.integers(0, side - width)), int(rng.integers(0, side - height))
            box = (left, top, left + width, top + height)
            if all(box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1] for o in placed):
                break
        else:
            continue
        shape = int(rng.integers(len(family.shapes)))
        under = background[top : top + height, left : left + width].reshape(-1, 3).mean(axis=0)
        colour = _contrasting_colour(rng, under)
        hole = tuple(int(value) for value in np.clip(under, 0, 255))
        _draw(draw, family.shapes[shape], box, colour, hole)
        placed.append(box)
        classes.append(shape)
        _draw(ImageDraw.Draw(instances), family.shapes[shape], box, len(placed), 0)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-NOISE, NOISE + 1, (side, side, 3))
    ids = np.asarray(instances)
    objects = []
    for number, shape in enumerate(classes, 1):
        rows, columns = np.nonzero(ids == number)
        if len(columns):
            left, top = int(columns.min()), int(rows.min())
            objects.append((shape, [left, top, int(columns.max()) + 1 - left, int(rows.max()) + 1 - top]))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), objects


def write_family(root: str, family: Family, count: int, seed: int) -> tuple[str, str]:
    """`count` scenes of `family` as `root/images/*.png` and `root/annotations.json` (COCO); return both paths."""
    rng = np.random.default_rng(seed)
    return write_coco_folder(root, (_scene(rng, family) for _ in range(count)), family.shapes)


def transfer(name: str, output_dir: str) -> dict[str, float]:
    """Train the demo's command on family `name` with its data flags swapped; score by pipeline and by evaluate."""
    root = os.path.join(output_dir, name)
    train = write_family(os.path.join(root, "train"), FAMILIES[name], TRAIN_SCENES, seed=10 + ord(name))
    held_out = write_family(os.path.join(root, "held_out"), FAMILIES[name], HELD_OUT_SCENES, seed=100 + ord(name))
    settings = DemoSettings(**{**dict(TASKS["object-detection"].demo_defaults), "task": "object-detection"})
    model_dir = os.path.join(root, "model")
    argv = detection_arguments(settings, train, held_out, model_dir)
    started = time.perf_counter()
    train_main(argv)
    seconds = time.perf_counter() - started
    truth, detections = held_out_detections(model_dir, *held_out)
    pipeline_scores = coco_metrics(truth, detections)
    shown = coco_metrics(truth, [found for found in detections if found["score"] > PIPELINE_THRESHOLD])
    evaluated = evaluate_main(["--model", model_dir, "--validation_dir", held_out[0], "--validation_annotations",
                               held_out[1], "--output_dir", os.path.join(root, "scores")])  # fmt: skip
    return {
        "map": pipeline_scores["map"],
        "map_50": pipeline_scores["map_50"],
        "evaluate_map": evaluated["map"],
        "map_above_threshold": shown["map"],
        "training_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the families asked for; print the table and write transfer.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    results = {name: transfer(name, args.output_dir) for name in args.families}
    print("| family | mAP (pipeline) | AP50 | mAP (evaluate) | mAP of the scores > 0.5 (former) | training |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['map']:.3f} | {row['map_50']:.3f} | {row['evaluate_map']:.3f} "
              f"| {row['map_above_threshold']:.3f} | {row['training_seconds']:.0f} s |")  # fmt: skip
    with open(os.path.join(args.output_dir, "transfer.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(run_command("detection_transfer.py", main, sys.argv[1:]))
