"""The zoo registry: conversion by name with checked downloads, convert-all, model cards, the docs table."""

import contextlib
import hashlib
import io
import json
import re
import runpy
import shutil
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from convnext_hf import ConvNextConfig
from convnext_hf.complexity import count_macs
from convnext_hf.conversion.download import default_cache_dir, expected_digest
from convnext_hf.conversion.zoo import load_zoo, select
from convnext_hf.conversion.zoo_table import render_zoo_table
from helpers import FIXTURES, run_convert

TINY = ((96, 192, 384, 768), (3, 3, 9, 3))



def official_checkpoint(widths, depths, num_classes: int) -> dict:
    """Random weights of a hierarchical ConvNeXt under the official parameter names."""
    generator = torch.Generator().manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator) * 0.05

    state = {"downsample_layers.0.0.weight": random(widths[0], 3, 4, 4)}
    state |= {"downsample_layers.0.0.bias": random(widths[0])}
    state |= {"downsample_layers.0.1.weight": 1 + random(widths[0]), "downsample_layers.0.1.bias": random(widths[0])}
    for i, (width, depth) in enumerate(zip(widths, depths)):
        if i:
            state |= {f"downsample_layers.{i}.0.weight": 1 + random(widths[i - 1]),
                      f"downsample_layers.{i}.0.bias": random(widths[i - 1]),
                      f"downsample_layers.{i}.1.weight": random(width, widths[i - 1], 2, 2),
                      f"downsample_layers.{i}.1.bias": random(width)}
        for j in range(depth):
            block = f"stages.{i}.{j}"
            state |= {f"{block}.dwconv.weight": random(width, 1, 7, 7), f"{block}.dwconv.bias": random(width),
                      f"{block}.norm.weight": 1 + random(width), f"{block}.norm.bias": random(width),
                      f"{block}.pwconv1.weight": random(4 * width, width), f"{block}.pwconv1.bias": random(4 * width),
                      f"{block}.pwconv2.weight": random(width, 4 * width), f"{block}.pwconv2.bias": random(width),
                      f"{block}.gamma": 1 + random(width)}
    state |= {"norm.weight": 1 + random(widths[-1]), "norm.bias": random(widths[-1])}
    state |= {"head.weight": random(num_classes, widths[-1]), "head.bias": random(num_classes)}
    return {"model": state}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A ConvNeXt-T with random weights, saved as the official release saves it."""
    path = tmp_path_factory.mktemp("release") / "convnext_tiny_local_copy.pth"
    torch.save(official_checkpoint(*TINY, num_classes=1000), path)
    return path


def test_card_of_an_official_checkpoint_renders_the_zoo_metadata(tiny_checkpoint, tmp_path):
    output = tmp_path / "tiny"
    assert run_convert("--model", "convnext_tiny_1k_224_ema", "--checkpoint", tiny_checkpoint, "--output", output) == 0
    card = ModelCard.load(output / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert {"vision", "convnext", "image-classification", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == ["ILSVRC/imagenet-1k"]
    [index] = data["model-index"]
    assert index["name"] == "convnext_tiny_1k_224_ema"
    [result] = index["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] == "ILSVRC/imagenet-1k" and result["dataset"]["split"] == "validation"
    assert result["metrics"] == [{"type": "accuracy", "value": 82.1, "name": "Top-1 accuracy"}]
    body = card.text
    assert "| parameters (counted in these weights) | 28.59 M |" in body
    assert "| GFLOPs at 224² (multiply-adds, as in the paper) | 4.46 |" in body
    assert "| parameters reported by the authors | 28 M |" in body
    assert "| GFLOPs reported by the authors | 4.5 |" in body
    assert "**82.1%**" in body and "| EMA weights | yes |" in body and "| labels | 1000 (imagenet-1k) |" in body
    assert hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest() in body
    assert "**official** layout" in body and "**Verified**" in body and "@inproceedings{liu2022convnet" in body
    assert f'model_id = "{output}"' in body and "trust_remote_code=True" in body and "pipeline(" in body
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 224} and processor["crop_pct"] == 0.875
    assert json.loads((output / "config.json").read_text())["id2label"]["0"] == "tench, Tinca tinca"


def test_a_384_checkpoint_warps_and_reports_its_own_results(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output = tmp_path / "tiny384"
    assert run_convert("--model", "convnext_tiny_22k_1k_384", "--checkpoint", tiny_checkpoint, "--output", output,
               "--no-verify", "--push-to-hub", "my-org/convnext-tiny-384") == 2
    # (the push fails offline, after the output is complete: see test_conversion_hub.py)
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 384} and processor["crop_pct"] == 1.0
    card = ModelCard.load(output / "README.md")
    assert card.data.datasets == ["timm/imagenet-22k-wds", "ILSVRC/imagenet-1k"]
    assert card.data.eval_results[0].metric_value == 84.1
    assert "| GFLOPs at 384² (multiply-adds, as in the paper) | 13.09 |" in card.text
    assert 'model_id = "my-org/convnext-tiny-384"' in card.text


def test_zoo_metadata_is_refused_for_weights_of_another_network(tmp_path, capsys):
    assert run_convert("--model", "convnext_tiny_1k_224_ema", "--checkpoint", FIXTURES / "mini.fb.pth",
               "--output", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "is not convnext_tiny_1k_224_ema" in error and "(16, 32, 64, 128)" in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("file_name", ["mini.timm.safetensors", "upernet-mini.mmseg.pth"])
def test_the_usage_snippet_of_the_card_runs(tmp_path, capsys, file_name):
    output = tmp_path / "converted"
    assert run_convert("--checkpoint", FIXTURES / file_name, "--output", output) == 0
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(image)
    snippet = re.search(r"```python\n(.*?)```", (output / "README.md").read_text(), re.S).group(1)
    assert f'model_id = "{output}"' in snippet
    capsys.readouterr()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(snippet.replace('"image.jpg"', repr(str(image))), "README.md", "exec"), {})
    *printed, pipeline_output = stdout.getvalue().splitlines()
    assert pipeline_output.startswith("[{") and "'label': 'LABEL_" in pipeline_output
    if printed:  # the classifier prints its top class, which the pipeline ranks first
        assert re.fullmatch(r"LABEL_[0-6]", printed[0]) and pipeline_output.startswith(f"[{{'label': '{printed[0]}'")


def test_zoo_lists_every_official_checkpoint_consistently():
    zoo = load_zoo()
    assert len(zoo) == 36 + 10 + 26 + 4  # ConvNeXt, its COCO detectors, ConvNeXt V2 (FCMAE, 1k, 22k), DINOv3
    formats = {entry.format for entry in zoo.values()}
    assert formats == {"official", "official-isotropic", "official-ade20k-upernet", "mmseg-upernet", "official-coco",
                       "mmdet-coco", "official-v2", "official-v2-fcmae", "dinov3"}
    assert all(entry.url.startswith(("https://dl.fbaipublicfiles.com/convnext/", "https://download.openmmlab.com/"))
               for entry in zoo.values() if entry.source != "facebookresearch/dinov3")
    assert sum(entry.num_labels == 21841 for entry in zoo.values()) == 5
    for entry in zoo.values():
        if entry.task == "image-classification":
            config = ConvNextConfig(hidden_sizes=list(entry.hidden_sizes), depths=list(entry.depths),
                                    isotropic=entry.isotropic, patch_size=16 if entry.isotropic else 4,
                                    num_labels=entry.num_labels, use_grn=entry.variant.startswith("v2-"))
            assert count_macs(config, entry.resolution) / 1e9 == pytest.approx(entry.gflops, rel=0.05), entry.name
    assert zoo["upernet_convnext_tiny_1k_512x512"].resolution == 512
    assert zoo["convnext_iso_base_1k_224_ema"].hidden_sizes == (768,)


def test_select_by_name_list_or_all():
    zoo = load_zoo()
    assert select(zoo, "all") == list(zoo.values())
    assert [e.name for e in select(zoo, "convnext_tiny_1k_224_ema, convnext_base_1k_384")] == [
        "convnext_tiny_1k_224_ema", "convnext_base_1k_384"]
    with pytest.raises(ValueError, match="Did you mean convnext_tiny_1k_224_ema"):
        select(zoo, "convnext_tiny_1k_224_em")


def test_docs_show_the_commands_and_the_current_zoo_table(capsys):
    documented_table = runpy.run_path(str(FIXTURES.parents[1] / "docs" / "make_zoo_table.py"))["documented_table"]
    assert documented_table() == render_zoo_table(load_zoo())
    assert "| `convnext_tiny_1k_224_ema` | official | tiny | 224 | 1k | 82.1 top-1 | 28 | 4.5 |" in documented_table()
    doc = (FIXTURES.parents[1] / "docs" / "conversion.md").read_text()
    for command in ("--checkpoint", "--model all", "--push_to_hub", "--target transformers", "--list_models"):
        assert command in doc
    assert run_convert("--list-models") == 0
    assert capsys.readouterr().out == render_zoo_table(load_zoo())


def test_help_and_docs_name_the_cache_folder_downloads_go_to(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "convnext_hf" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(default_cache_dir()).endswith("/.cache/convnext_hf/checkpoints")
    with pytest.raises(SystemExit):
        run_convert("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    expected = "$XDG_CACHE_HOME/convnext_hf/checkpoints, ~/.cache/convnext_hf/checkpoints when unset"
    assert expected in help_text
    doc = " ".join((FIXTURES.parents[1] / "docs" / "conversion.md").read_text().split())
    assert "default `$XDG_CACHE_HOME/convnext_hf/checkpoints`, `~/.cache/convnext_hf/checkpoints` when unset" in doc


@pytest.mark.slow
def test_checkout_script_is_the_installed_command(tmp_path):
    script = FIXTURES.parents[1] / "conversion" / "convert.py"
    result = subprocess.run([sys.executable, str(script), "--list-models"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_zoo_table(load_zoo())


def test_checksums_come_from_the_zoo_or_the_released_file_name():
    zoo = load_zoo()
    assert expected_digest(zoo["upernet_convnext_tiny_fp16_512x512_160k_ade20k"].url) == "cad485de"
    assert expected_digest(zoo["convnext_tiny_1k_224_ema"].url) is None
    assert expected_digest(zoo["convnext_tiny_1k_224_ema"].url, "AB" * 32) == "ab" * 32


def zoo_record(name, file_url, **fields) -> dict:
    return {"name": name, "source": "facebookresearch/ConvNeXt", "format": "official", "task": "image-classification",
            "variant": "mini", "url": file_url, "ema": False, **fields}


@pytest.fixture
def local_release(tmp_path):
    """A registry of golden checkpoints served from file:// URLs, one with a wrong hash in its name."""
    release = tmp_path / "release"
    release.mkdir()
    shutil.copy(FIXTURES / "mini.fb.pth", release / "mini_1k_224.pth")
    shutil.copy(FIXTURES / "iso-mini.fb.pth", release / "iso_mini_1k_224.pth")
    upernet = (FIXTURES / "upernet-mini.mmseg.pth").read_bytes()
    good = f"upernet_mini_20220227_124553-{hashlib.sha256(upernet).hexdigest()[:8]}.pth"
    (release / good).write_bytes(upernet)
    (release / "upernet_mini_20220227_124553-deadbeef.pth").write_bytes(upernet)
    segmentation = {"source": "open-mmlab/mmsegmentation", "format": "mmseg-upernet", "task": "semantic-segmentation",
                    "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1], "num_labels": 6, "crop_size": 64,
                    "finetune_dataset": "ade20k", "reported_miou": 40.5, "reported_miou_ms_flip": 41.25}
    records = [
        zoo_record("mini", (release / "mini_1k_224.pth").as_uri(), hidden_sizes=[16, 32, 64, 128],
                   depths=[1, 2, 3, 1], num_labels=7, resolution=224, pretrain_dataset="imagenet-1k",
                   reported_top1=50.0),
        zoo_record("iso_mini", (release / "iso_mini_1k_224.pth").as_uri(), format="official-isotropic",
                   hidden_size=32, depth=3, num_labels=5, resolution=224),
        zoo_record("upernet_mini", (release / good).as_uri(), **segmentation),
        zoo_record("upernet_corrupt", (release / "upernet_mini_20220227_124553-deadbeef.pth").as_uri(), **segmentation),
    ]
    zoo_file = tmp_path / "zoo.json"
    zoo_file.write_text(json.dumps({"checkpoints": records}))
    return zoo_file


def test_convert_all_downloads_checks_converts_and_summarizes(local_release, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert run_convert("--model", "all", "--zoo", local_release, "--output", out, "--cache-dir", cache) == 1
    stdout = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in stdout.splitlines() if line.startswith("| ")}
    for name, layout in (("mini", "official"), ("iso_mini", "official-isotropic"), ("upernet_mini", "upernet-mmseg")):
        cells = [cell.strip() for cell in rows[name].strip("| ").split(" | ")]
        assert cells[1:3] == ["ok", layout] and float(cells[3]) <= 1e-5, rows[name]
        assert (out / name / "README.md").is_file() and (out / name / "model.safetensors").is_file()
    assert "FAILED: upernet_mini_20220227_124553-deadbeef.pth has SHA-256" in rows["upernet_corrupt"]
    assert "3 converted, 1 failed, 0 skipped (gated downloads)." in stdout
    assert not (out / "upernet_corrupt").exists()
    assert (cache / "upernet_mini_20220227_124553-deadbeef.pth.rejected").is_file()

    records = json.loads((cache / "checksums.json").read_text())  # digests recorded only where none was published
    assert records == {
        (tmp_path / "release" / name).as_uri(): hashlib.sha256((tmp_path / "release" / name).read_bytes()).hexdigest()
        for name in ("mini_1k_224.pth", "iso_mini_1k_224.pth")
    }
    card = ModelCard.load(out / "upernet_mini" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-segmentation"
    assert [(r.metric_type, r.metric_value, r.metric_config) for r in card.data.eval_results] == [
        ("mean_iou", 40.5, "single-scale"), ("mean_iou", 41.25, "multi-scale+flip")]
    processor = json.loads((out / "upernet_mini" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 64}

    with open(cache / "mini_1k_224.pth", "ab") as cached:  # a cached file that changed is refused on the next use
        cached.write(b"\0")
    again = tmp_path / "again"
    assert run_convert("--model", "mini", "--zoo", local_release, "--output_dir", again, "--cache_dir", cache) == 2
    assert "was published as" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_an_unreachable_url_says_how_to_convert_offline(tmp_path, capsys):
    missing = (tmp_path / "nowhere" / "convnext.pth").as_uri()
    assert run_convert("--checkpoint", missing, "--output", tmp_path / "out", "--cache-dir", tmp_path / "cache") == 2
    error = capsys.readouterr().err
    assert "Could not download" in error and "--checkpoint PATH" in error
    assert not (tmp_path / "out").exists()
