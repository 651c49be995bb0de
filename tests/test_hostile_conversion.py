"""Hostile and careless input to the converter, one row per class of case: each is refused with exit status 2 and one
message that names the input and the problem, leaves nothing in the output location and runs nothing it carries.

Every hostile file is built in tmp_path from the small golden fixtures."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from convnext_hf.conversion.checkpoint_io import load_checkpoint
from helpers import FIXTURES, run_convert

FAMILY = FIXTURES / "family"
REPOSITORY = Path(__file__).resolve().parent.parent


class RunsCode:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def official_state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / "mini.fb.pth", weights_only=True)["model"]


def save_official(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state}, path)
    return path


def timm_folder(path: Path, config_edit: Callable[[dict], None] | None = None, case: str = "hnf-mini") -> Path:
    """A timm Hub folder (config.json + model.safetensors) of a family case, its config edited."""
    shutil.copytree(FAMILY / f"{case}.timm", path)
    config = json.loads((path / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return path


def timm_mini_folder(path: Path, config_edit: Callable[[dict], None]) -> Path:
    """mini.timm.safetensors (final norm after pooling, `head.norm`) with the hnf case's timm config.json, edited."""
    config = json.loads((FAMILY / "hnf-mini.timm" / "config.json").read_text())
    config["architecture"] = "convnext_tiny"
    config["model_args"].pop("head_norm_first")
    config_edit(config)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    shutil.copy(FIXTURES / "mini.timm.safetensors", path / "model.safetensors")
    return path


def transformers_folder(path: Path, config_edit: Callable[[dict], None] | None = None) -> Path:
    """The built-in transformers mini folder, its config edited."""
    path.mkdir()
    config = json.loads((FIXTURES / "mini.transformers.config.json").read_text())
    if config_edit:
        config_edit(config)
    (path / "config.json").write_text(json.dumps(config))
    shutil.copy(FIXTURES / "mini.transformers.safetensors", path / "model.safetensors")
    return path


def convnext_hf_folder(path: Path, config_edit: Callable[[dict], None] | None = None) -> Path:
    """A convnext_hf folder of the mini model (model_type convnext_hf), its config edited."""
    def ours(config: dict) -> None:
        config.update(model_type="convnext_hf", architectures=["ConvNextForImageClassification"])
        config.pop("num_stages")
        if config_edit:
            config_edit(config)

    return transformers_folder(path, ours)


def with_tensor(path: Path, name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    state = official_state()
    state[name] = value(state[name])
    return save_official(path, state)


def set_first(tensor: torch.Tensor, number: float) -> torch.Tensor:
    tensor = tensor.clone()
    tensor.view(-1)[0] = number
    return tensor


def pdparams(path: Path, content: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


def passl_arrays() -> dict[str, np.ndarray]:
    with open(FIXTURES / "mini.passl.pdparams", "rb") as handle:
        content = load_pdparams_plain(handle)
    return {name: value for name, value in content.items() if isinstance(value, np.ndarray)}


def load_pdparams_plain(handle) -> dict:
    """The golden .pdparams read with numpy's own unpickling (trusted test fixture)."""
    return pickle.load(handle)


def huge_array_pickle() -> bytes:
    """A 123-byte pickle asking only for numpy's allowed constructors: an array declared (2**30,) float32 (4 GiB),
    holding 8 bytes of data."""
    shape = b"J" + (2**30).to_bytes(4, "little") + b"\x85"  # the tuple (2**30,)
    return (
        b"\x80\x02}X\x01\x00\x00\x00w"  # protocol 2, {} and the key "w"
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + shape + b"X\x02\x00\x00\x00f4\x87R"
        b"(K\x01" + shape + b"cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R"  # state: version, shape, dtype,
        b"\x89C\x08" + bytes(8) + b"tb"  # not Fortran-ordered, 8 bytes of data; BUILD
        b"s."
    )


def sharded_folder(path: Path, shard: str) -> Path:
    path.mkdir()
    state = load_file(FIXTURES / "mini.timm.safetensors")
    save_file(state, path / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {name: "model-00001-of-00001.safetensors" for name in state}}
    index["weight_map"]["head.fc.weight"] = shard
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path


def two_safetensors(path: Path) -> Path:
    path.mkdir()
    state = load_file(FIXTURES / "mini.timm.safetensors")
    save_file(state, path / "model.safetensors")
    save_file({name: value * 0.5 for name, value in state.items()}, path / "model_ema.safetensors")
    return path


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def folder_with_config(path: Path, config_text: str) -> Path:
    path.mkdir()
    (path / "config.json").write_text(config_text)
    shutil.copy(FIXTURES / "mini.transformers.safetensors", path / "model.safetensors")
    return path


def plain_and_module(path: Path, scale: float) -> Path:
    state = official_state()
    doubled = {**state, **{f"module.{name}": value * scale for name, value in state.items()}}
    return save_official(path, doubled)


def index_folder(path: Path, index_text: str) -> Path:
    path.mkdir()
    shutil.copy(FIXTURES / "mini.timm.safetensors", path / "model-00001-of-00001.safetensors")
    (path / "model.safetensors.index.json").write_text(index_text)
    return path


def file_as_parent(root: Path) -> list[object]:
    (root / "a-file").write_text("not a folder")
    return ["--checkpoint", FIXTURES / "mini.fb.pth", "--output_dir", root / "a-file" / "out"]


def marker_of(source: Path) -> Path:
    return source.parent / "code-ran"


# Each row: id, builder(input folder) -> checkpoint path or full argv, extra flags, what the message must name.
CASES: list[tuple[str, Callable[[Path], object], tuple[str, ...], tuple[str, ...]]] = [
    # 1. Claims against the weights.
    ("timm-config-hnf-top-level-vs-head-norm",
     lambda d: timm_mini_folder(d / "timm", lambda c: c.update(head_norm_first=True)), (),
     ("head_norm_first", "head.norm")),
    ("timm-model-args-hnf-vs-head-norm",
     lambda d: timm_mini_folder(d / "timm", lambda c: c["model_args"].update(head_norm_first=True)), (),
     ("head_norm_first", "head.norm")),
    ("timm-model-args-no-hnf-vs-norm-pre",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(head_norm_first=False)), (),
     ("head_norm_first", "norm_pre")),
    ("timm-dims-vs-weights",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(dims=[16, 32, 64, 256])), (),
     ("dims", "[16, 32, 64, 256]", "(16, 32, 64, 128)")),
    ("timm-depths-vs-weights",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(depths=[3, 3, 9, 3])), (),
     ("depths", "[3, 3, 9, 3]", "(1, 2, 3, 1)")),
    ("timm-num-classes-vs-head",
     lambda d: timm_folder(d / "timm", lambda c: c.update(num_classes=1000)), (), ("num_classes", "1000", "7")),
    ("timm-norm-eps-zero",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(norm_eps=0)), (), ("norm_eps", "positive")),
    ("timm-norm-eps-negative",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(norm_eps=-1e-6)), (), ("norm_eps", "positive")),
    ("timm-norm-eps-string",
     lambda d: timm_folder(d / "timm", lambda c: c["model_args"].update(norm_eps="1e-6")), (), ("norm_eps",)),
    ("builtin-config-claims-hnf",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(head_norm_first=True)), (),
     ("head_norm_first", "convnext")),
    ("convnext-hf-hidden-sizes-vs-weights",
     lambda d: convnext_hf_folder(d / "hf", lambda c: c.update(hidden_sizes=[16, 32, 64, 96])), (),
     ("hidden_sizes", "[16, 32, 64, 96]", "(16, 32, 64, 128)")),
    ("convnext-hf-negative-eps",
     lambda d: convnext_hf_folder(d / "hf", lambda c: c.update(layer_norm_eps=-1e-6)), (),
     ("layer_norm_eps", "positive")),
    ("convnext-hf-relu",
     lambda d: convnext_hf_folder(d / "hf", lambda c: c.update(hidden_act="relu")), (), ("hidden_act", "relu")),
    ("id2label-count-vs-head",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(id2label={str(i): f"c{i}" for i in range(5)})), (),
     ("id2label", "5", "7")),
    ("id2label-keys-not-numbers",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(id2label={f"k{i}": f"c{i}" for i in range(7)})), (),
     ("id2label", "k0")),
    # 2. Duplicate keys, several weight files, dtypes, non-finite values.
    ("plain-and-module-keys-differ", lambda d: plain_and_module(d / "doubled.pth", 2.0), (),
     ("module.", "differ")),
    ("two-safetensors-in-folder", lambda d: two_safetensors(d / "ema"), (),
     ("model.safetensors", "model_ema.safetensors", "--weights_file")),
    ("hnf-norm-pre-and-head-norm",
     lambda d: write_safetensors(d / "both.safetensors", extra_norm_pre), (), ("norm_pre", "norm")),
    ("complex-weight",
     lambda d: with_tensor(d / "complex.pth", "head.weight", lambda t: t.to(torch.complex64)), (),
     ("head.weight", "complex64")),
    ("int-weight", lambda d: with_tensor(d / "int.pth", "head.weight", lambda t: (t * 100).to(torch.int32)), (),
     ("head.weight", "int32")),
    ("bool-weight", lambda d: with_tensor(d / "bool.pth", "norm.weight", lambda t: t > 0), (),
     ("norm.weight", "bool")),
    ("nan-weight", lambda d: with_tensor(d / "nan.pth", "stages.2.1.pwconv1.weight", lambda t: set_first(t, np.nan)),
     (), ("non-finite", "stages.2.1.pwconv1.weight")),
    ("inf-weight-no-verify",
     lambda d: with_tensor(d / "inf.pth", "head.bias", lambda t: set_first(t, np.inf)), ("--no-verify",),
     ("non-finite", "head.bias")),
    # 3. Foreign processor settings.
    ("timm-two-means",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(mean=[0.5, 0.5])), (),
     ("mean", "3")),
    ("timm-zero-std",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(std=[0.2, 0.0, 0.2])), (),
     ("std", "positive")),
    ("timm-negative-std",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(std=[0.2, -0.2, 0.2])), (),
     ("std", "positive")),
    ("timm-huge-input-size",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(input_size=[3, 100000, 100000])), (),
     ("input_size", "100000")),
    ("timm-input-size-mistyped",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(input_size="224")), (),
     ("input_size",)),
    ("timm-crop-pct-zero",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(crop_pct=0)), (), ("crop_pct",)),
    ("timm-interpolation-list",
     lambda d: timm_folder(d / "timm", lambda c: c["pretrained_cfg"].update(interpolation=["bicubic"])), (),
     ("interpolation",)),
    ("resolution-absurd", lambda d: FIXTURES / "mini.fb.pth", ("--resolution", "1000000000"),
     ("resolution", "1000000000")),
    # 4. Paths.
    ("index-shard-escapes", lambda d: sharded_folder(d / "sharded", "../../../../etc/hostname"), (),
     ("../../../../etc/hostname", "inside")),
    ("index-shard-absolute", lambda d: sharded_folder(d / "sharded", "/etc/hostname"), (),
     ("/etc/hostname", "inside")),
    ("index-not-json", lambda d: index_folder(d / "sharded", "{not json"), (),
     ("model.safetensors.index.json", "JSON")),
    ("index-mistyped", lambda d: index_folder(d / "sharded", '{"weight_map": ["a"]}'), (),
     ("model.safetensors.index.json", "weight_map")),
    # 5. Foreign pickles: bounded memory, true messages.
    ("pdparams-declares-4gib", lambda d: write(d / "huge.pdparams", huge_array_pickle()), (),
     ("huge.pdparams", "bytes")),
    ("pdparams-random-bytes", lambda d: write(d / "random.pdparams", bytes(range(256)) * 4), (),
     ("random.pdparams", "corrupt")),
    ("pdparams-truncated",
     lambda d: write(d / "cut.pdparams", (FIXTURES / "mini.passl.pdparams").read_bytes()[:5000]), (),
     ("cut.pdparams", "corrupt")),
    ("pdparams-runs-code",
     lambda d: pdparams(d / "evil.pdparams", {"backbone.stages.0.0.pwconv1.weight": RunsCode(d / "code-ran")}), (),
     ("evil.pdparams", "system", "could run code")),
    ("pth-random-bytes", lambda d: write(d / "random.pth", bytes(range(256)) * 4), (),
     ("random.pth", "corrupt")),
    ("pth-zero-bytes", lambda d: write(d / "empty.pth", b""), (), ("empty.pth", "empty")),
    ("safetensors-zero-bytes", lambda d: write(d / "empty.safetensors", b""), (), ("empty.safetensors",)),
    ("safetensors-bad-header", lambda d: write(d / "bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage!!!}"),
     (), ("bad.safetensors", "safetensors")),
    ("safetensors-in-folder-corrupt", lambda d: write_in_folder(d / "f", "model.safetensors", b"\x00" * 20), (),
     ("model.safetensors",)),
    # 6. Usage mistakes.
    ("config-not-json", lambda d: folder_with_config(d / "hf", "{oops"), (), ("config.json", "JSON")),
    ("config-a-list", lambda d: folder_with_config(d / "hf", "[1, 2]"), (), ("config.json", "object")),
    ("timm-model-args-mistyped",
     lambda d: timm_folder(d / "timm", lambda c: c.update(model_args="dims")), (), ("model_args",)),
    ("output-parent-is-a-file", file_as_parent, (), ("a-file",)),
    ("max-shard-size-nonsense", lambda d: FIXTURES / "mini.fb.pth", ("--max_shard_size", "banana"),
     ("--max_shard_size", "banana")),
    ("max-shard-size-zero", lambda d: FIXTURES / "mini.fb.pth", ("--max_shard_size", "0"), ("--max_shard_size",)),
    ("zoo-not-json", lambda d: ["--model", "convnext_tiny_1k_224_ema", "--zoo", write(d / "zoo.json", "{nope")],
     (), ("zoo.json", "JSON")),
    ("zoo-mistyped", lambda d: ["--model", "convnext_tiny_1k_224_ema", "--zoo", write(d / "zoo.json", '{"a": 1}')],
     (), ("zoo.json", "checkpoints")),
    ("tolerance-negative", lambda d: FIXTURES / "mini.fb.pth", ("--tolerance", "-1"), ("--tolerance", "-1")),
    ("tolerance-infinite", lambda d: FIXTURES / "mini.fb.pth", ("--tolerance", "inf"), ("--tolerance", "inf")),
    ("weights-file-missing", lambda d: two_safetensors(d / "ema"), ("--weights_file", "nope.safetensors"),
     ("nope.safetensors",)),
    ("checkpoint-not-a-regular-file", lambda d: Path("/dev/null"), (), ("/dev/null",)),
    # Next of the same kinds.
    ("float64-beyond-float32",
     lambda d: with_tensor(d / "big.pth", "head.weight", lambda t: set_first(t.double(), 1e300)), ("--no-verify",),
     ("non-finite", "head.weight")),
    ("id2label-null-name",
     lambda d: transformers_folder(d / "hf", lambda c: c["id2label"].update({"3": None})), (), ("id2label", "None")),
    ("builtin-no-layer-scale-vs-gamma",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(layer_scale_init_value=0.0)), (),
     ("layer_scale_init_value", "layer scale")),
    ("output-is-the-checkpoint-folder", lambda d: ["--checkpoint", timm_folder(d / "timm"), "--output_dir", d / "timm",
                                                   "--overwrite"], (), ("holds the checkpoint",)),
    ("safetensors-declares-4gib",
     lambda d: write(d / "huge.safetensors", safetensors_declaring(2**30)), (), ("huge.safetensors",)),
    # The unseen cases of the same kinds (issue 15's closing sweep).
    ("legacy-pth-declares-32gib", lambda d: legacy_declaring(d / "huge.pth", 2**33), (),
     ("huge.pth", "34,359,738,368 bytes", "holds 362")),
    ("zip-pth-truncated", lambda d: write(d / "cut.pth", (FIXTURES / "mini.fb.pth").read_bytes()[:3000]), (),
     ("cut.pth", "corrupt")),
    ("zip-directory-declares-more-than-the-file", lambda d: zip_bomb(d / "bomb.pth"), (),
     ("bomb.pth", "zip directory declares")),
    ("tar-archive-named-pth", lambda d: tar_of_fixture(d / "old.pth"), (), ("old.pth", "tar archive")),
    ("npz-named-as-checkpoint", lambda d: npz(d / "w.npz"), (), ("w.npz", "corrupt")),
    ("safetensors-header-length-lies", lambda d: write(d / "x.safetensors", (10**12).to_bytes(8, "little") + b"{}"),
     (), ("x.safetensors", "header too large")),
    ("safetensors-overlapping-offsets", lambda d: write(d / "x.safetensors", overlapping_safetensors()), (),
     ("x.safetensors", "invalid offset")),
    ("safetensors-huge-shape", lambda d: write(d / "x.safetensors", huge_shape_safetensors()), (),
     ("x.safetensors", "invalid shape")),
    ("folder-weights-name-is-a-folder", lambda d: folder_with_subfolder(d / "f", "model.safetensors"), (),
     ("folder without weights",)),
    ("folder-config-json-is-a-folder", lambda d: folder_with_subfolder(d / "f", "config.json", weights=True), (),
     ("config.json", "not a file")),
    ("checkpoint-folder-named-pth", lambda d: folder_with_subfolder(d / "x.pth", "sub"), (), ("x.pth",)),
    ("pth-integer-keys", lambda d: torch_save(d / "k.pth", {1: torch.zeros(2)}), (), ("k.pth", "1", "text")),
    ("pth-sparse-tensor", lambda d: with_tensor(d / "s.pth", "head.bias", lambda t: t.to_sparse()), (),
     ("head.bias", "sparse_coo")),
    ("pth-meta-tensor", lambda d: with_tensor(d / "m.pth", "head.bias", lambda t: torch.empty(t.shape, device="meta")),
     (), ("head.bias", "meta")),
    ("id2label-numbered-with-a-gap",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(id2label={str(i): f"c{i}" for i in [*range(6), 9]})),
     (), ("id2label", "missing [6]")),
    ("output-is-a-symlink-to-the-checkpoint-folder", lambda d: symlinked_output(d), (), ("holds the checkpoint",)),
    ("output-dir-empty-string", lambda d: ["--checkpoint", FIXTURES / "mini.fb.pth", "--output_dir", ""], (),
     ("--output_dir", "empty")),
    ("license-with-a-newline", lambda d: FIXTURES / "mini.fb.pth", ("--license", "mit\nlibrary_name: evil"),
     ("--license", "not a license id")),
    ("license-with-yaml-markup", lambda d: FIXTURES / "mini.fb.pth", ("--license", "mit: {x: 1}"),
     ("--license", "'mit: {x: 1}'")),
    ("transformers-drop-path-rate-2",
     lambda d: transformers_folder(d / "hf", lambda c: c.update(drop_path_rate=2)), (), ("drop_path_rate", "got 2")),
    ("convnext-hf-drop-path-rate-negative",
     lambda d: convnext_hf_folder(d / "hf", lambda c: c.update(drop_path_rate=-0.1)), (),
     ("drop_path_rate", "got -0.1")),
    # Names and metadata beside the weights that describe another model (issue 15's leftovers).
    ("timm-architecture-name-vs-weights",
     lambda d: timm_folder(d / "timm", lambda c: without_sizes(c, "convnext_large.fb_in22k", "dims", "depths")), (),
     ("'convnext_large.fb_in22k'", "dims [192, 384, 768, 1536]", "(16, 32, 64, 128)", "depths [3, 3, 27, 3]")),
    ("timm-v2-architecture-name-depths-vs-weights",
     lambda d: timm_folder(d / "timm", lambda c: without_sizes(c, "convnextv2_huge_ols", "depths")), (),
     ("'convnextv2_huge_ols'", "v2-huge", "depths [3, 3, 27, 3]", "(1, 2, 3, 1)")),
    ("timm-architecture-not-a-name",
     lambda d: timm_folder(d / "timm", lambda c: c.update(architecture=["convnext_tiny"])), (), ("architecture",)),
    ("mmcls-meta-classes-vs-head", lambda d: with_meta(d / "c.pth", "mini.mmcls.pth", CLASSES=["a"] * 5), (),
     ("c.pth", "meta.CLASSES names 5 classes", "classification head has 7")),
    ("mmpretrain-dataset-meta-classes-vs-head",
     lambda d: with_meta(d / "c.pth", "mini.mmcls.pth", dataset_meta={"classes": ["a"] * 1000}), (),
     ("meta.dataset_meta.classes names 1000 classes", "has 7")),
    ("mmcls-meta-config-other-arch",
     lambda d: with_meta(d / "c.pth", "mini.mmcls.pth", config="model = dict(backbone=dict(type='ConvNeXt', "
                         "arch='large', drop_path_rate=0.5))"), (),
     ("meta.config names the backbone arch='large'", "widths (16, 32, 64, 128)")),
    ("mmseg-meta-classes-vs-decode-head",
     lambda d: with_meta(d / "s.pth", "upernet-mini.mmseg.pth", CLASSES=[f"c{i}" for i in range(150)]), (),
     ("meta.CLASSES names 150 classes", "decode head has 6")),
    ("mmdet-meta-classes-vs-box-head",
     lambda d: with_meta(d / "m.pth", "det-mini.mmdet.pth", CLASSES=[f"c{i}" for i in range(80)]), (),
     ("meta.CLASSES names 80 classes", "box head", "has 3")),
    ("cache-dir-is-a-file",
     lambda d: ["--checkpoint", "http://127.0.0.1:9/x.pth", "--cache_dir", write(d / "cache", "mine")], (),
     ("cache", "is a file")),
]


def without_sizes(config: dict, architecture: str, *fields: str) -> None:
    """A timm config naming `architecture`, without the model_args `fields` that would override its sizes."""
    config["architecture"] = architecture
    for name in fields:
        config["model_args"].pop(name)


def with_meta(path: Path, fixture: str, **meta: object) -> Path:
    """An mm* golden checkpoint with its `meta` updated."""
    content = torch.load(FIXTURES / fixture, weights_only=True)
    content["meta"].update(meta)
    return torch_save(path, content)


def legacy_declaring(path: Path, elements: int) -> Path:
    """A legacy (non-zip) PyTorch file with one float32 tensor whose storage declares `elements` values and holds 2;
    torch's legacy loader would allocate the declared size before reading."""

    class Storage:
        def __reduce__(self):  # only its persistent id is written
            raise AssertionError

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (STORAGE, 0, (2,), (1,), False, collections.OrderedDict())

    STORAGE = Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", elements, None) if obj is STORAGE else None

    buffer = io.BytesIO()
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    for header in (0x1950A86A20F9469CFC6C, 1001, info):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump({"model": {"head.weight": Tensor()}})
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(struct.pack("<q", 2) + bytes(8))
    return write(path, buffer.getvalue())


def zip_bomb(path: Path) -> Path:
    """The golden checkpoint's zip with one record replaced by 64 MiB of zeros, deflated to about 64 KiB."""
    with zipfile.ZipFile(FIXTURES / "mini.fb.pth") as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = bytes(64 << 20) if info.filename.endswith("/data/0") else source.read(info)
            target.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def tar_of_fixture(path: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        archive.add(FIXTURES / "mini.fb.pth", "storages")
    return path


def npz(path: Path) -> Path:
    np.savez(path, weight=np.zeros(3, np.float32))
    return path


def overlapping_safetensors() -> bytes:
    tensor = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    header = json.dumps({"a": tensor, "b": tensor}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(8)


def huge_shape_safetensors() -> bytes:
    header = json.dumps({"a": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(8)


def folder_with_subfolder(path: Path, name: str, weights: bool = False) -> Path:
    (path / name).mkdir(parents=True)
    if weights:
        shutil.copy(FIXTURES / "mini.transformers.safetensors", path / "model.safetensors")
    return path


def torch_save(path: Path, content: object) -> Path:
    torch.save(content, path)
    return path


def symlinked_output(root: Path) -> list[object]:
    """--output_dir is a link (outside the inputs) to the checkpoint folder, with --overwrite."""
    folder = transformers_folder(root / "hf")
    link = root.parent / "link"
    link.symlink_to(folder, target_is_directory=True)
    return ["--checkpoint", folder, "--output_dir", link, "--overwrite"]


def safetensors_declaring(elements: int) -> bytes:
    """A safetensors file whose header declares `elements` float32 values and which holds 8 bytes of data."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [elements], "data_offsets": [0, 4 * elements]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(8)


def extra_norm_pre(state: dict[str, torch.Tensor]) -> None:
    state["norm_pre.weight"] = state["head.norm.weight"].clone()
    state["norm_pre.bias"] = state["head.norm.bias"].clone()


def write_safetensors(path: Path, edit: Callable[[dict], None]) -> Path:
    state = load_file(FIXTURES / "mini.timm.safetensors")
    edit(state)
    save_file(state, path)
    return path


def write_in_folder(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir()
    write(folder / name, data)
    return folder


@pytest.mark.parametrize("build, flags, named", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_input_is_refused_by_name_and_leaves_nothing(tmp_path, capsys, build, flags, named):
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    built = build(inputs)
    output = work / "out"
    argv = built if isinstance(built, list) else ["--checkpoint", built, "--output_dir", output]
    if "--output_dir" not in argv:
        argv = [*argv, "--output_dir", output]
    status = run_convert(*argv, *flags)
    error = capsys.readouterr().err
    assert status == 2, error
    assert error.startswith("convnext-hf convert: error: "), error
    for word in named:
        assert word in error, f"{word!r} not in: {error}"
    assert "please report" not in error
    assert list(work.iterdir()) == []
    assert not (inputs / "code-ran").exists()


def test_a_4gib_declaration_in_a_123_byte_pdparams_allocates_nothing_large(tmp_path):
    source = write(tmp_path / "huge.pdparams", huge_array_pickle())
    assert source.stat().st_size < 130
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bytes"):
            load_checkpoint(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_protocol_2_pdparams_loads_and_converts(tmp_path, capsys):
    arrays = passl_arrays()
    source = pdparams(tmp_path / "old.pdparams", arrays, protocol=2)
    loaded = load_checkpoint(source).tensors
    assert loaded.keys() == arrays.keys()
    assert all(np.array_equal(loaded[name].numpy(), arrays[name]) for name in arrays)
    assert run_convert("--checkpoint", source, "--output_dir", tmp_path / "out") == 0
    assert "verified, max |diff|" in capsys.readouterr().out


def test_identical_plain_and_module_duplicates_collapse_with_a_notice(tmp_path, capsys):
    source = plain_and_module(tmp_path / "doubled.pth", 1.0)
    assert run_convert("--checkpoint", source, "--output_dir", tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert "module." in captured.err and "identical" in captured.err
    assert "verified" in captured.out


def test_weights_file_chooses_one_of_several(tmp_path, capsys):
    folder = two_safetensors(tmp_path / "ema")
    assert run_convert("--checkpoint", folder, "--weights_file", "model.safetensors",
                       "--output_dir", tmp_path / "out") == 0
    assert "verified" in capsys.readouterr().out
    converted = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(converted["classifier.weight"], load_file(FIXTURES / "mini.timm.safetensors")["head.fc.weight"])


def test_a_config_claim_the_weights_cannot_check_is_stated_not_called_verified(tmp_path, capsys):
    """A convnext_hf folder's head_norm_first and eps are not in its weights: they are carried over, the reference
    forward computes them from the config on its own, and the output says they were taken from the config."""
    folder = convnext_hf_folder(tmp_path / "hf", lambda c: c.update(head_norm_first=True, layer_norm_eps=1e-5))
    assert run_convert("--checkpoint", folder, "--output_dir", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert "head_norm_first=True" in out and "layer_norm_eps=1e-05" in out and "config.json" in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["head_norm_first"] is True and config["layer_norm_eps"] == 1e-5
    assert "head_norm_first=True" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.slow
def test_the_checkout_entry_point_prints_one_line_and_exits_2(tmp_path):
    empty = write(tmp_path / "empty.pth", b"")
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "conversion" / "convert.py"), "--checkpoint", str(empty),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "empty.pth" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_a_legacy_pth_declaring_32gib_is_refused_before_torch_allocates(tmp_path, monkeypatch):
    source = legacy_declaring(tmp_path / "huge.pth", 2**33)

    def must_not_run(*args, **kwargs):
        raise AssertionError("torch.load ran: it would allocate the declared storage")

    monkeypatch.setattr(torch, "load", must_not_run)
    with pytest.raises(ValueError, match="declare 34,359,738,368 bytes"):
        load_checkpoint(source)


def test_a_legacy_pth_and_shared_views_convert(tmp_path, capsys):
    """Not everything unusual is hostile: a legacy (non-zip) file, and a state dict whose tensors share memory."""
    state = official_state()
    state["head.bias"] = state["head.weight"].view(-1)[: state["head.bias"].numel()]
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": state}, legacy, _use_new_zipfile_serialization=False)
    assert run_convert("--checkpoint", legacy, "--output_dir", tmp_path / "out") == 0
    assert "verified" in capsys.readouterr().out
    converted = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(converted["classifier.bias"], state["head.bias"])


@pytest.mark.parametrize("architecture", ["convnext_xxlarge.clip_laion2b", "convnext_zepto_rms", "resnet50"])
def test_a_timm_name_the_variant_table_cannot_map_is_not_refused(tmp_path, capsys, architecture):
    folder = timm_folder(tmp_path / "timm", lambda c: without_sizes(c, architecture, "dims", "depths"))
    assert run_convert("--checkpoint", folder, "--output_dir", tmp_path / "out") == 0
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["new\nline.pth", "tab\tand 'quote'.pth", "bell\x07.pth", "nel\x85.pth"])
def test_a_control_character_in_the_checkpoint_path_stays_inside_one_card_line(tmp_path, capsys, name):
    """The card's command line (and its source) show such a path as bash's $'...' word: one line, and pasting it gives
    back the path."""
    source = tmp_path / name
    shutil.copy(FIXTURES / "mini.fb.pth", source)
    assert run_convert("--checkpoint", source, "--output_dir", tmp_path / "out") == 0
    card = (tmp_path / "out" / "README.md").read_text()
    command = next(line.strip() for line in card.splitlines() if line.startswith("    convnext-hf convert"))
    assert command.endswith(f"--output_dir {tmp_path / 'out'}"), command
    word = command.split(" ", 3)[3].rpartition(" --output_dir")[0]
    assert word.startswith("$'") and "\n" not in word and "\t" not in word, word
    echoed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert echoed == os.fsencode(source)
    assert f"Converted from `{word}`" in card
