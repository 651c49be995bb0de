"""CPU cost before the first training step, against the number of images (issue 22's acceptance measurement).

Generates folders of ImageNet-like JPEGs (500×375, ~65 kB, 10 classes) and times `convnext-hf train --max_steps 1`
on a tiny model from launch: the CPU seconds of the whole process tree (user + system of the command and every
process it started), so that the figure does not depend on other load on the machine. Each size runs cold (no cache
of any kind from an earlier run) and warm (the same command again, its caches kept), `--repeats` times each; the
least CPU time of the repeats counts (other load only adds to it). The cost per image is the difference to the
smallest folder, divided by the difference in images.

    python benchmarks/first_step.py --root /tmp/first-step --sizes 200 8000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

TINY = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})


def make_folder(root: str, count: int, classes: int = 10, seed: int = 0) -> str:
    """`count` 500×375 JPEGs (smooth colour fields with noise, quality 90) in `classes` class folders."""
    if os.path.isdir(root) and sum(len(files) for _, _, files in os.walk(root)) == count:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (26, 26, 3), dtype=np.uint8)
    for index in range(count):
        folder = os.path.join(root, f"class{index % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        field = Image.fromarray(np.roll(base, index, axis=(0, 1)) ^ np.uint8(index % 251)).resize((500, 375))
        pixels = np.asarray(field).astype(np.int16) + rng.integers(-12, 12, (375, 500, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{index:07d}.jpg"), quality=90)
    return root


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and their children) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_cpu(folder: str, work: str, extra: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `convnext-hf train --max_steps 1` on `folder`."""
    command = [
        sys.executable, "-m", "convnext_hf.train", "--train_dir", folder, "--variant", "atto",
        "--config_overrides", TINY, "--image_size", "32", "--max_steps", "1", "--per_device_train_batch_size", "8",
        "--max_eval_samples", "8", "--output_dir", os.path.join(work, "out"), "--overwrite",
        "--cache_dir", os.path.join(work, "cache"), "--report_to", "none", "--plots", "false",
        "--save_strategy", "no", *extra,
    ]  # fmt: skip
    before, start = children_cpu(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    return children_cpu() - before, time.perf_counter() - start


def main() -> None:
    """Generate the folders, time cold and warm runs on each, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/tmp/convnext-hf-first-step")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 8000])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind; the least CPU time counts")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    parser.add_argument("extra", nargs="*", help="more `convnext-hf train` flags (after --)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        folder = make_folder(os.path.join(args.root, f"images-{size}"), size)
        work = os.path.join(args.root, f"work-{size}")
        colds, warms = [], []
        for _ in range(args.repeats):
            shutil.rmtree(work, ignore_errors=True)
            colds.append(train_cpu(folder, work, args.extra))
            warms.append(train_cpu(folder, work, args.extra))
        cold, warm = min(colds), min(warms)
        rows.append({"images": size, "cold_cpu_s": cold[0], "cold_wall_s": cold[1], "warm_cpu_s": warm[0],
                     "warm_wall_s": warm[1]})  # fmt: skip
        print(f"{size:>9,} images: cold {cold[0]:6.2f} s CPU ({cold[1]:.1f} s wall), "
              f"warm {warm[0]:6.2f} s CPU ({warm[1]:.1f} s wall)", flush=True)  # fmt: skip
    first = rows[0]
    for row in rows[1:]:
        extra_images = row["images"] - first["images"]
        for kind in ("cold", "warm"):
            row[f"{kind}_ms_per_image"] = 1e3 * (row[f"{kind}_cpu_s"] - first[f"{kind}_cpu_s"]) / extra_images
        print(f"above {first['images']}: {row['cold_ms_per_image']:.3f} ms/image cold, "
              f"{row['warm_ms_per_image']:.3f} ms/image warm; ImageNet-1k (1.28 M): "
              f"{row['cold_ms_per_image'] * 1281.167:.0f} s cold, {row['warm_ms_per_image'] * 1281.167:.0f} s warm")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(rows, file, indent=2)


if __name__ == "__main__":
    main()
