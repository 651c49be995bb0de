"""The input pipeline of `convnext-hf train`: how many images a loader worker prepares per second, and how much of a
training step waits for data.

1. Per worker (one process, no loader): decoding alone (the floor: read, decode, convert to RGB) and the whole paper
   recipe a training image goes through (`--recipe paper-in1k`: random-resized crop to 224, flip, RandAugment
   rand-m9-mstd0.5-inc1, normalization, random erasing 0.25), both on the same ImageNet-like JPEGs (500×375).
2. End to end: training steps (forward, backward, AdamW) of a ConvNeXt fed by the run's own loader (the folder as
   `convnext-hf train` reads it, its transforms, its collate, the default number of workers) against the same steps on
   synthetic tensors; the data-wait share is the time spent waiting for the next batch over the whole loop.

    python benchmarks/input_pipeline.py --folder /tmp/convnext-hf-first-step/images-8000 --variant atto

The folder is one `benchmarks/first_step.py` made (or any folder of class subfolders).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from convnext_hf import ConvNextConfig, ConvNextForImageClassification
from convnext_hf.images import read_image
from convnext_hf.tasks import get_task
from convnext_hf.train import parse_args
from convnext_hf.train.run import _set_loader_workers


def per_worker(folder: str, transform, processor, count: int) -> dict[str, float]:
    """Images per second of decoding alone and of decoding plus the recipe, in this one process."""
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)[:count]
    started = time.process_time()
    for path in paths:
        read_image(path)
    decode = len(paths) / (time.process_time() - started)
    started = time.process_time()
    for path in paths:
        transform(read_image(path))
    recipe = len(paths) / (time.process_time() - started)
    return {"decode_images_per_s": decode, "recipe_images_per_s": recipe}


def end_to_end(model, loader, batch_size: int, image_size: int, steps: int) -> dict[str, float]:
    """Images per second of training steps fed by `loader`, the share of time spent waiting for it, and the same
    steps on synthetic tensors."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(pixel_values, labels):
        loss = torch.nn.functional.cross_entropy(model(pixel_values=pixel_values).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = iter(loader)
    step(**{key: value for key, value in next(batches).items() if key in ("pixel_values", "labels")})  # warm-up
    waited, started, images = 0.0, time.perf_counter(), 0
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        step(batch["pixel_values"], batch["labels"])
        images += len(batch["labels"])
    with_data = time.perf_counter() - started
    synthetic = torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, 10, (batch_size,))
    started = time.perf_counter()
    for _ in range(steps):
        step(*synthetic)
    without_data = time.perf_counter() - started
    return {
        "data_images_per_s": images / with_data,
        "synthetic_images_per_s": steps * batch_size / without_data,
        "data_wait_share": waited / with_data,
    }


def main() -> None:
    """Measure both parts and print (and optionally save) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="a folder of class subfolders of JPEGs")
    parser.add_argument("--variant", default="atto", help="the ConvNeXt of the end-to-end part (tiny on a GPU)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=200, help="images of the per-worker part")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the run's default)")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    options = parser.parse_args()
    argv = ["--train_dir", options.folder, "--recipe", "paper-in1k", "--variant", options.variant,
            "--image_size", str(options.image_size), "--train_val_split", "0", "--output_dir", "/tmp/unused"]
    if options.workers is not None:
        argv += ["--dataloader_num_workers", str(options.workers)]  # fmt: skip
    args = parse_args(argv)
    task = get_task("image-classification")
    hooks = task.hooks
    data = hooks.load_data(args)
    config = ConvNextConfig.from_variant(options.variant, num_labels=len(data.label_names))
    model = ConvNextForImageClassification(config)
    processor = hooks.build_processor(args, model)
    transform = hooks.train_transform(args, processor)
    results = {"per_worker": per_worker(options.folder, transform, processor, options.images)}

    _set_loader_workers(args, len(data.train))
    workers = args.training.dataloader_num_workers
    train = hooks.attach_transforms(args, data, processor).train
    loader = torch.utils.data.DataLoader(
        train, batch_size=options.batch_size, shuffle=True, collate_fn=hooks.collate, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=2 if workers else None, drop_last=True,
    )  # fmt: skip
    model.train()
    results["end_to_end"] = {
        "variant": options.variant, "image_size": options.image_size, "batch_size": options.batch_size,
        "workers": workers, "torch_threads": torch.get_num_threads(),
        **end_to_end(model, loader, options.batch_size, options.image_size, options.steps),
    }  # fmt: skip
    print(json.dumps(results, indent=2))
    if options.output:
        with open(options.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
