"""What resuming a stream mid-epoch reads again, and what datasets' own stateful resume would lose instead.

`--resume_from_checkpoint` on a `--streaming` run regenerates the stream's order and drops the examples already
trained on before they are decoded (`EpochStream.resume_after`): those examples' bytes are read again from the shards,
not decoded or augmented. This measures, on a local folder of parquet shards of ImageNet-like JPEGs (500×375):

1. the time to reach the resume point after k examples, against k = 0, per example skipped (and the shard bytes that
   represents), next to the time to decode the same images (what a replay that decoded them would cost);
2. `datasets`' `IterableDataset.state_dict()` / `load_state_dict()` on the same shuffled stream: the time to resume at
   k, and how many of the epoch's examples the resumed stream never gives (its shuffle buffer is not saved).

    python benchmarks/stream_resume.py --images 2000 --shards 4
"""

from __future__ import annotations

import argparse
import json
import os
import time

import datasets
from first_step import make_folder

from convnext_hf.images import read_image
from convnext_hf.train.streaming import EpochStream


def write_shards(images: str, folder: str, shards: int) -> None:
    """Parquet shards `train-*.parquet` of the folder's JPEGs (bytes and class)."""
    os.makedirs(folder, exist_ok=True)
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(images) for name in names)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    for shard in range(shards):
        part = files[shard::shards]
        rows = {"image": [{"bytes": open(path, "rb").read(), "path": os.path.basename(path)} for path in part],
                "label": [int(os.path.basename(os.path.dirname(path))[5:]) for path in part]}  # fmt: skip
        shard_path = os.path.join(folder, f"train-{shard:05d}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(shard_path)


def open_stream(folder: str) -> datasets.IterableDataset:
    """The training stream as `--streaming` opens it: undecoded images."""
    stream = datasets.load_dataset(folder, streaming=True, split="train")
    return stream.cast_column("image", datasets.Image(decode=False))


def time_to_resume_point(folder: str, examples: int, buffer_size: int) -> float:
    """Seconds from a resumed stream's start to its first example after `examples` already trained on."""
    stream = EpochStream(open_stream(folder), batch_size=1, training=True, seed=0, buffer_size=buffer_size)
    stream.resume_after(examples, workers=0)
    start = time.perf_counter()
    next(iter(stream))
    return time.perf_counter() - start


def read_ms_per_example(folder: str) -> float:
    """Milliseconds per example of reading the whole stream in order, undecoded, past its first example."""
    examples = iter(open_stream(folder))
    next(examples)
    start, count = time.perf_counter(), 0
    for _ in examples:
        count += 1
    return 1000 * (time.perf_counter() - start) / count


def stateful_resume(folder: str, examples: int, buffer_size: int) -> dict[str, float]:
    """datasets' own resume at `examples`: seconds to the next example, and the epoch's examples never given."""
    stream = open_stream(folder).shuffle(seed=0, buffer_size=buffer_size)
    before, state = [], None
    for example in stream:
        before.append(example["image"]["path"])
        if len(before) == examples:
            state = stream.state_dict()
            break
    resumed = open_stream(folder).shuffle(seed=0, buffer_size=buffer_size)
    resumed.load_state_dict(state)
    start = time.perf_counter()
    rest = iter(resumed)
    first = next(rest, None)
    seconds = time.perf_counter() - start
    after = [example["image"]["path"] for example in ([first] if first else [])]
    after.extend(example["image"]["path"] for example in rest)
    everything = [example["image"]["path"] for example in open_stream(folder)]
    return {"seconds_to_next_example": seconds, "examples_given_after_resuming": len(after),
            "examples_never_given": len(set(everything) - set(before) - set(after))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--buffer_size", type=int, default=1000)
    parser.add_argument("--work", default="/tmp/convnext-hf-stream-resume")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "stream_resume.json"))
    options = parser.parse_args()
    images = make_folder(os.path.join(options.work, f"images-{options.images}"), options.images)
    folder = os.path.join(options.work, f"shards-{options.images}-{options.shards}")
    if not os.path.isdir(folder):
        write_shards(images, folder, options.shards)
    shard_bytes = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    skipped = options.images * 3 // 4
    baseline = min(time_to_resume_point(folder, 0, options.buffer_size) for _ in range(3))
    resumed = min(time_to_resume_point(folder, skipped, options.buffer_size) for _ in range(3))
    sample = [example["image"] for _, example in zip(range(200), open_stream(folder), strict=False)]
    start = time.perf_counter()
    for image in sample:
        read_image(image)
    decode = (time.perf_counter() - start) / len(sample)
    reread = (resumed - baseline) / skipped
    result = {
        "images": options.images, "shards": options.shards, "buffer_size": options.buffer_size,
        "shard_bytes": shard_bytes, "bytes_per_image": shard_bytes / options.images,
        "skipped_examples": skipped, "seconds_to_first_example_fresh": baseline,
        "seconds_to_first_example_after_skipping": resumed, "reread_ms_per_example": 1000 * reread,
        "reread_mb_per_s": shard_bytes / options.images / reread / 1e6,
        "read_in_order_ms_per_example": min(read_ms_per_example(folder) for _ in range(3)),
        "decode_ms_per_example": 1000 * decode,
        "datasets_state_dict_resume": stateful_resume(folder, skipped, options.buffer_size),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    with open(options.out, "w") as file:
        json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
