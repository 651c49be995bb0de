"""What the input gates cost: the saved-folder gate and the finiteness check on a ConvNeXt-T folder, and the one image
reader against a bare `Image.open(...).convert("RGB")` on a photograph-sized JPEG.

    PYTHONPATH=src python benchmarks/gates.py [--repeats 5]

Prints a markdown table of median seconds (docs/training.md quotes it).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification
from convnext_hf.finite import non_finite_tensors
from convnext_hf.image_processing_convnext import ConvNextHFImageProcessor
from convnext_hf.images import read_image
from convnext_hf.model_folder import check_saved_folder, load_model_folder


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Time each gate beside the work it guards and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig.from_variant("tiny"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        ConvNextHFImageProcessor().save_pretrained(folder)
        plain = median_seconds(lambda: ConvNextForImageClassification.from_pretrained(folder), repeats)
        gated = median_seconds(lambda: load_model_folder(ConvNextForImageClassification, folder), repeats)
        rows += [
            ("ConvNeXt-T folder: from_pretrained", plain),
            ("ConvNeXt-T folder: load_model_folder (gate + finiteness)", gated),
            ("  of which the file checks (check_saved_folder)", median_seconds(lambda: check_saved_folder(folder),
                                                                             repeats)),  # fmt: skip
            ("  of which the finiteness check (28.6M weights)", median_seconds(lambda: non_finite_tensors(model),
                                                                            repeats)),  # fmt: skip
        ]
    pixels = np.random.default_rng(0).integers(0, 256, size=(3000, 4000, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, exif=exif)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        path.write_bytes(buffer.getvalue())
        rows += [
            ("12 MP JPEG: Image.open().convert('RGB') (stored frame)", median_seconds(
                lambda: Image.open(path).convert("RGB"), repeats)),
            ("12 MP JPEG, EXIF 6: read_image (displayed frame)", median_seconds(lambda: read_image(path), repeats)),
        ]  # fmt: skip
    print(f"| work ({torch.get_num_threads()} CPU threads) | median seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
