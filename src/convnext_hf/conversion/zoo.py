"""The registry of official ConvNeXt, ConvNeXt V2 and DINOv3 ConvNeXt checkpoints (package data
`convnext_hf/conversion/data/zoo.json`).

It drives conversion by name (`--model`), the metadata of model cards and the model-zoo table of docs/conversion.md.
The architecture it lists is only checked against the weights, never used in their place.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..configuration_convnext import HIERARCHICAL_VARIANTS, V2_VARIANTS
from ..errors import UserInputError
from .architecture import Architecture

LICENSES = {
    "facebookresearch/ConvNeXt": "mit",
    "open-mmlab/mmsegmentation": "apache-2.0",
    "open-mmlab/mmdetection": "apache-2.0",
}
# Hub license ids of the licenses the registry names; a license the Hub does not list is "other" with its name.
HUB_LICENSES = {"CC-BY-NC-4.0": "cc-by-nc-4.0"}
REPOSITORIES = {
    "facebookresearch/ConvNeXt": "https://github.com/facebookresearch/ConvNeXt",
    "open-mmlab/mmsegmentation": "https://github.com/open-mmlab/mmsegmentation/tree/main/configs/convnext",
    "open-mmlab/mmdetection": "https://github.com/open-mmlab/mmdetection/tree/main/configs/convnext",
    "facebookresearch/ConvNeXt-V2": "https://github.com/facebookresearch/ConvNeXt-V2",
    "facebookresearch/dinov3": "https://github.com/facebookresearch/dinov3",
}


@dataclass(frozen=True)
class ZooEntry:
    """One official checkpoint: where it is, what it is, what its authors report."""

    name: str
    source: str
    format: str
    task: str
    variant: str
    url: str | None
    num_labels: int
    resolution: int
    hidden_sizes: tuple[int, ...]
    depths: tuple[int, ...]
    isotropic: bool
    pretrain_dataset: str | None
    finetune_dataset: str | None
    reported_top1: float | None
    reported_miou: float | None
    reported_miou_ms_flip: float | None
    params_m: float | None
    gflops: float | None
    ema: bool
    sha256: str | None
    release_license: str | None = None
    task_note: str | None = None
    hub_id: str | None = None
    download: str | None = None
    # COCO detection releases: the detector the backbone was trained in, and its reported val2017 box / mask AP.
    detector: str | None = None
    reported_box_ap: float | None = None
    reported_mask_ap: float | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ZooEntry:
        """Read one registry record (hierarchical, isotropic, UperNet or COCO detector)."""
        isotropic = "hidden_size" in raw
        if isotropic:
            hidden_sizes, depths = (raw["hidden_size"],), (raw["depth"],)
        elif "hidden_sizes" in raw:
            hidden_sizes, depths = tuple(raw["hidden_sizes"]), tuple(raw["depths"])
        else:
            hidden_sizes, depths = HIERARCHICAL_VARIANTS[raw["variant"]]
        return cls(
            name=raw["name"],
            source=raw["source"],
            format=raw["format"],
            task=raw["task"],
            variant=raw["variant"],
            url=raw.get("url"),
            num_labels=raw["num_labels"],
            resolution=raw.get("resolution") or raw["crop_size"],
            hidden_sizes=tuple(hidden_sizes),
            depths=tuple(depths),
            isotropic=isotropic,
            pretrain_dataset=raw.get("pretrain_dataset"),
            finetune_dataset=raw.get("finetune_dataset"),
            reported_top1=raw.get("reported_top1"),
            reported_miou=raw.get("reported_miou"),
            reported_miou_ms_flip=raw.get("reported_miou_ms_flip"),
            params_m=raw.get("params_m"),
            gflops=raw.get("gflops"),
            ema=bool(raw.get("ema", False)),
            sha256=raw.get("sha256"),
            release_license=raw.get("license"),
            task_note=raw.get("task_note"),
            hub_id=raw.get("hub_id"),
            download=raw.get("download"),
            detector=raw.get("detector"),
            reported_box_ap=raw.get("reported_box_ap"),
            reported_mask_ap=raw.get("reported_mask_ap"),
        )

    @property
    def license(self) -> str:
        """Hub license id of the released weights: the release's own where it names one, else its repository's."""
        if self.release_license:
            return HUB_LICENSES.get(self.release_license, "other")
        return LICENSES.get(self.source, "unknown")

    @property
    def license_name(self) -> str | None:
        """The name of a license the Hub has no id for (e.g. the DINOv3 License), None otherwise."""
        return self.release_license if self.license == "other" else None

    @property
    def location(self) -> str:
        """Where to download the checkpoint from; a clear error for gated releases, which need a form first."""
        if self.url is None:
            raise UserInputError(
                f"{self.name} has no direct download ({self.download or 'gated release'}); download it yourself"
                f"{f' (Hub: {self.hub_id})' if self.hub_id else ''} and pass --checkpoint PATH --model {self.name}."
            )
        return self.url

    @property
    def repository(self) -> str:
        """Web page of the release."""
        return REPOSITORIES.get(self.source, self.url)

    def check_matches(self, arch: Architecture) -> None:
        """Refuse to describe weights with this entry's metadata when they are a different network."""
        listed = (self.hidden_sizes, self.depths, self.isotropic, self.num_labels, self.variant in V2_VARIANTS)
        found = (arch.hidden_sizes, arch.depths, arch.isotropic, arch.num_labels, arch.use_grn)
        if listed != found:
            raise UserInputError(
                f"The checkpoint is not {self.name}: the zoo lists hidden sizes {self.hidden_sizes}, depths "
                f"{self.depths}, isotropic {self.isotropic}, {self.num_labels} classes, GRN {listed[-1]}, but the "
                f"weights have {arch.hidden_sizes}, {arch.depths}, {arch.isotropic}, {arch.num_labels}, "
                f"{arch.use_grn}. Pass the matching --model, or leave --model out to convert the file without zoo "
                "metadata."
            )


def default_zoo_path() -> Path:
    """The registry shipped with the package."""
    return Path(str(resources.files(__package__) / "data" / "zoo.json"))


def load_zoo(path: str | Path | None = None) -> dict[str, ZooEntry]:
    """All entries of the registry at `path` (default: the package's), by name, in file order."""
    path = Path(path or default_zoo_path())
    if not path.is_file():
        raise UserInputError(f"The zoo file {path} does not exist; pass a checkpoint registry JSON to --zoo.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"The zoo file {path} is not valid JSON ({error}); pass a checkpoint registry.") from None
    records = raw.get("checkpoints") if isinstance(raw, dict) else None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise UserInputError(
            f"The zoo file {path} has no `checkpoints` list of records; see the shipped one (convnext_hf/conversion/"
            "data/zoo.json) for the format."
        )
    try:
        return {record["name"]: ZooEntry.from_dict(record) for record in records}
    except (KeyError, TypeError, ValueError) as error:
        raise UserInputError(
            f"The zoo file {path} has a record without a valid {error}; see the shipped one for the format."
        ) from None


def select(zoo: dict[str, ZooEntry], names: str) -> list[ZooEntry]:
    """Entries for `all` or a comma-separated list of names; unknown names get the closest known ones suggested."""
    if names == "all":
        return list(zoo.values())
    selected = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in zoo:
            close = difflib.get_close_matches(name, zoo, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserInputError(f"No checkpoint named {name!r} in the zoo.{hint} List them with --list_models.")
        selected.append(zoo[name])
    if not selected:
        raise UserInputError("--model is empty; pass a checkpoint name, a comma-separated list, or 'all'.")
    return selected
