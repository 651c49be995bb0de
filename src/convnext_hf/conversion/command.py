"""Convert ConvNeXt checkpoints (official, timm, mmcls/mmsegmentation, PASSL, transformers) to Hub-ready folders.

    convnext-hf convert --model convnext_tiny_1k_224_ema --output_dir DIR [--push_to_hub USER/REPO]
    convnext-hf convert --model PATH_OR_URL --output_dir DIR  # a checkpoint file or folder (also: --checkpoint)
    convnext-hf convert --model all --output_dir DIR          # every official checkpoint, then a summary

(`python conversion/convert.py ...` in a checkout is the same command.)

The layout and the architecture are read from the weights. The output folder (safetensors weights, config, image
processor config, README.md model card) appears only once complete and verified.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..card_table import markdown_cell
from ..cli import CommandParser, printable, shell_join
from ..errors import UserInputError
from .download import CACHE_DIR_HELP, default_cache_dir
from .options import CONVNEXT_HF, DEFAULT_TOLERANCE, TARGETS

if TYPE_CHECKING:
    from .zoo import ZooEntry

# Status of a zoo entry `--model all` cannot download (a gated release).
SKIPPED = "skipped: no direct download, pass --checkpoint"


@dataclass(frozen=True)
class Outcome:
    """What one conversion produced."""

    output: Path
    layout: str
    architecture: str
    max_diff: float | None
    url: str | None
    dropped: dict[str, int]
    assumed: tuple[str, ...] = ()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = CommandParser(
        prog="convnext-hf convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", "--model_name_or_path", help="which model: a zoo name, a comma-separated list of "
                        "them or 'all'; or a checkpoint file, transformers or timm folder, or http(s) URL (the same "
                        "as --checkpoint)")
    parser.add_argument("--checkpoint", help="checkpoint file, transformers folder, or http(s) URL")
    parser.add_argument("--weights_file", metavar="NAME",
                        help="in a --checkpoint folder holding several weight files, the one to convert")
    parser.add_argument("--output_dir", "--output", type=folder_path,
                        help="output folder (with several --model names: their parent)")
    parser.add_argument("--target", choices=TARGETS, default=CONVNEXT_HF,
                        help="convnext_hf (default; isotropic models too) or transformers' built-in ConvNext format")
    parser.add_argument("--resolution", type=int,
                        help="evaluation resolution (default: the zoo's, a timm folder's input size, else 224)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="check the saved model against the reference forward of the source weights (default on)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="verification tolerance")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--max_shard_size", default="2GB", help="largest safetensors shard (default 2GB)")
    parser.add_argument("--license", help="license for the model card (default: the release's, else 'unknown')")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", nargs="?", const="",
                        help="upload to this repository (with several --model names: a namespace); or name it with "
                        "--hub_model_id, as train does")
    parser.add_argument("--hub_model_id", metavar="REPO_ID", help="the repository --push_to_hub uploads to")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--cache_dir", type=Path, default=None, help=CACHE_DIR_HELP)
    parser.add_argument("--zoo", type=Path, help="checkpoint registry JSON (default: the one shipped with convnext_hf)")
    parser.add_argument("--list_models", action="store_true", help="print the zoo and exit")
    args = parser.parse_args(argv)
    _hub_repository(args)
    if not args.list_models:
        if args.output_dir is None:
            parser.error("--output_dir is required: the folder to write the converted model to.")
        if not args.checkpoint and not args.model:
            parser.error("pass --checkpoint PATH_OR_URL, or --model NAME to convert an official checkpoint.")
    return args


def folder_path(value: str) -> Path:
    """A folder given on the command line; an empty value (an unset shell variable) is refused, not taken for `.`."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; pass the folder to write the converted model to")
    return Path(value)


def _is_location(model: str) -> bool:
    """Whether a --model value names a checkpoint (a URL or an existing path) rather than zoo entries."""
    return model.startswith(("http://", "https://", "file://")) or os.path.exists(model)


def _check_repo_id(repo_id: str) -> None:
    """Refuse a --push_to_hub value the Hub would reject, before the conversion runs."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserInputError(
            f"--push_to_hub {repo_id!r} is not a Hub repository id; give USER/NAME (or, with several --model names, a "
            "namespace) of letters, digits and - _ ."
        ) from None


def check_options(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, before anything is read or written."""
    from huggingface_hub.serialization._base import parse_size_to_int

    from .claims import check_resolution
    from .model_card import check_license
    from .verification import check_tolerance

    check_tolerance(args.tolerance)
    if args.private and not args.push_to_hub:
        raise UserInputError(
            "--private makes the Hub repository of --push_to_hub private; without --push_to_hub nothing is uploaded. "
            "Add --push_to_hub REPO_ID, or drop --private."
        )
    if args.push_to_hub:
        _check_repo_id(args.push_to_hub)
    if args.license is not None:
        check_license(args.license)
    if args.resolution is not None:
        check_resolution(args.resolution, "--resolution")
    try:
        shard_size = parse_size_to_int(args.max_shard_size)
    except ValueError:
        shard_size = 0
    if shard_size <= 0:
        raise UserInputError(
            f"--max_shard_size {args.max_shard_size!r} is not a size; give a positive number with a unit (KB, MB, GB, "
            "TB), e.g. --max_shard_size 2GB."
        )
    if args.output_dir is not None:
        _check_writable(args.output_dir)
        # Resolved, so that a link to the checkpoint's folder is seen for what it is.
        source = Path(args.checkpoint).resolve() if args.checkpoint and "://" not in args.checkpoint else None
        output = args.output_dir.resolve()
        if source is not None and (source == output or output in source.parents):
            raise UserInputError(
                f"--output_dir {args.output_dir} holds the checkpoint {args.checkpoint}; writing there would replace "
                "the source. Choose another output folder."
            )


def _check_writable(output: Path) -> None:
    """The output folder can be created: its closest existing ancestor is a folder this process may write to."""
    ancestor = output.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(
            f"Cannot create {output}: {ancestor} is a file, not a folder; choose another --output_dir."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"Cannot create {output}: {ancestor} is not writable; choose another --output_dir.")


def _source(location: str, entry: ZooEntry | None, cache_dir: Path) -> tuple[Path, str | None]:
    """Local path of the checkpoint (downloading URLs) and its SHA-256 (None for folders)."""
    from .download import fetch, sha256_of

    if location.startswith(("http://", "https://", "file://")):
        return fetch(location, cache_dir, entry.sha256 if entry else None)
    path = Path(location)
    return path, sha256_of(path) if path.is_file() else None


def convert_one(
    location: str, output: Path, entry: ZooEntry | None, args: argparse.Namespace, repo_id: str | None, command: str
) -> Outcome:
    """Convert one checkpoint into `output`, verify it, write its card; then push it if asked."""
    from ..atomic import atomic_directory
    from ..finite import check_before_saving
    from .checkpoint_io import load_checkpoint
    from .converter import convert, reload, save
    from .hub import push_folder
    from .model_card import Provenance, build_model_card
    from .verification import verify

    resolution = args.resolution if args.resolution is not None else (entry.resolution if entry else None)
    with atomic_directory(output, overwrite=args.overwrite) as staging:
        path, digest = _source(location, entry, args.cache_dir or default_cache_dir())
        checkpoint = load_checkpoint(path, args.weights_file)
        for notice in checkpoint.notices:
            print(f"convnext-hf convert: note: {notice}", file=sys.stderr)
        conversion = convert(checkpoint, target=args.target, resolution=resolution)
        if entry:
            entry.check_matches(conversion.arch)
        check_before_saving(conversion.model, output)
        save(conversion, staging, args.max_shard_size)
        diffs = None
        if args.verify:
            diffs = verify(conversion.arch, reload(conversion, staging), conversion.official, args.tolerance)
        provenance = Provenance(location, digest, diffs, args.tolerance, command)
        card = build_model_card(
            conversion, entry, provenance, conversion.resolution, repo_id or str(output), args.license
        )
        card.save(staging / "README.md")
    url = push_folder(output, repo_id, private=args.private) if repo_id else None
    max_diff = max(diffs.values()) if diffs else None
    return Outcome(
        output, conversion.layout.name, conversion.arch.describe(), max_diff, url,
        dropped=conversion.dropped, assumed=conversion.assumed,
    )


def dropped_listing(dropped: dict[str, int]) -> str:
    """The dropped modules in one line: `neck.lateral_convs (8 tensors), ...`."""
    return ", ".join(f"{module} ({count} tensors)" for module, count in dropped.items())


def summary_table(rows: list[tuple[str, ...]]) -> str:
    """Markdown table of a batch run."""
    header = ("checkpoint", "status", "layout", "max diff", "seconds", "output")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows])


def _hub_repository(args: argparse.Namespace) -> None:
    """Read train's spelling too: `--push_to_hub --hub_model_id REPO_ID` is `--push_to_hub REPO_ID`."""
    if args.hub_model_id is not None:
        if args.push_to_hub is None:
            raise UserInputError("--hub_model_id names the repository of --push_to_hub; add --push_to_hub.")
        if args.push_to_hub not in ("", args.hub_model_id):
            raise UserInputError(f"--push_to_hub {args.push_to_hub} and --hub_model_id {args.hub_model_id} name two "
                                 "repositories; give one.")  # fmt: skip
        args.push_to_hub = args.hub_model_id
    elif args.push_to_hub == "":
        raise UserInputError("--push_to_hub needs the repository: --push_to_hub REPO_ID, or --hub_model_id REPO_ID.")


def convert_many(entries: list[ZooEntry], args: argparse.Namespace, command: str) -> int:
    """Convert zoo entries one after the other into `--output_dir/NAME`, print a summary; 1 if any failed. Gated
    releases (no direct download, e.g. DINOv3) are listed as skipped: convert a local copy with --checkpoint."""
    from tqdm.auto import tqdm

    if args.push_to_hub and "/" in args.push_to_hub:
        raise UserInputError(
            "With several --model names, --push_to_hub takes a namespace (user or org), not a repo id."
        )
    rows = []
    for entry in tqdm(entries, desc="converting", unit="checkpoint"):
        start = time.perf_counter()
        repo_id = f"{args.push_to_hub}/{entry.name}" if args.push_to_hub else None
        if entry.url is None:
            rows.append((entry.name, SKIPPED, "", "", "0.0", f"gated: {entry.download or entry.hub_id}"))
            continue
        try:
            outcome = convert_one(entry.location, args.output_dir / entry.name, entry, args, repo_id, command)
            diff = "—" if outcome.max_diff is None else f"{outcome.max_diff:.1e}"
            seconds = f"{time.perf_counter() - start:.1f}"
            rows.append((entry.name, "ok", outcome.layout, diff, seconds, str(outcome.output)))
        except Exception as error:  # one bad checkpoint must not stop the batch; the table reports it
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            rows.append((entry.name, f"FAILED: {message}", "", "", f"{time.perf_counter() - start:.1f}", ""))
    print(summary_table(rows))
    failed = sum(row[1] not in ("ok", SKIPPED) for row in rows)
    skipped = sum(row[1] == SKIPPED for row in rows)
    print(f"{len(rows) - failed - skipped} converted, {failed} failed, {skipped} skipped (gated downloads).")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """`convnext-hf convert`: returns the exit status; bad input raises UserInputError (the CLI prints it)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging

    from .zoo import load_zoo, select
    from .zoo_table import render_zoo_table

    transformers_logging.disable_progress_bar()  # one bar per checkpoint (ours) is enough
    command = shell_join(["convnext-hf", "convert", *argv])
    zoo = load_zoo(args.zoo)
    if args.list_models:
        print(render_zoo_table(zoo), end="")
        return 0
    names = [] if args.model is None else [name.strip() for name in args.model.split(",")]
    if args.model not in (None, "all") and not all(name in zoo for name in names) and _is_location(args.model):
        # --model names the model either way: zoo entries, or a checkpoint to read.
        if args.checkpoint:
            raise UserInputError(f"--model {args.model} and --checkpoint {args.checkpoint} both name a checkpoint; "
                                 "give one.")
        args.checkpoint, args.model = args.model, None
    check_options(args)
    entries = select(zoo, args.model) if args.model else []
    if len(entries) > 1 or args.model == "all":
        if args.checkpoint:
            raise UserInputError("--checkpoint names one file; use it with a single --model name, or leave it out.")
        return convert_many(entries, args, command)
    entry = entries[0] if entries else None
    location = args.checkpoint or entry.location
    outcome = convert_one(location, args.output_dir, entry, args, args.push_to_hub, command)
    verified = "not verified" if outcome.max_diff is None else f"verified, max |diff| {outcome.max_diff:.2e}"
    if outcome.assumed:
        verified += f"; taken from config.json, not checkable in the weights: {', '.join(outcome.assumed)}"
    print(f"{printable(outcome.output)}: {outcome.architecture}; {outcome.layout} layout; {verified}.")
    if outcome.dropped:
        print(f"dropped (no transformers counterpart): {dropped_listing(outcome.dropped)}")
    if outcome.url:
        print(f"pushed to {outcome.url}")
    return 0

