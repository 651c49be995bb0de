"""A saved folder is a Hub repository: safetensors, code files and auto_map, loadable where convnext_hf is not."""

import json
import os
import pty
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor

REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["convnext_hf"] = None  # as on a machine where the package is not installed
    import torch
    from PIL import Image
    from transformers import (AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel,
                              AutoModelForImageClassification, pipeline)

    try:
        import convnext_hf
        raise SystemExit("convnext_hf must not be importable here")
    except ImportError:
        pass
    folder, image_path, out_path = sys.argv[1:]
    image = Image.open(image_path)
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values).logits
        pooled = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()(pixel_values).pooler_output
        # transformers 5 sends AutoBackbone.from_pretrained's path to the Hub's repo_exists, which rejects local
        # folders; resolve the remote backbone class through from_config and load the weights with it.
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        backbone_class = type(AutoBackbone.from_config(config, trust_remote_code=True))
        features = backbone_class.from_pretrained(folder).eval()(pixel_values).feature_maps
    predictions = pipeline("image-classification", model=folder, trust_remote_code=True)(image, top_k=3)
    json.dump({
        "model_class": type(model).__module__ + "." + type(model).__name__,
        "processor_class": type(processor).__name__,
        "logits": logits.tolist(),
        "pooled": pooled.tolist(),
        "backbone_class": backbone_class.__module__ + "." + backbone_class.__name__,
        "last_feature_shape": list(features[-1].shape),
        "predictions": predictions,
    }, open(out_path, "w"))
    """
)


@pytest.fixture
def saved_folder(tmp_path):
    torch.manual_seed(0)
    labels = ["cat", "dog", "fox", "owl", "yak"]
    config = ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = ConvNextForImageClassification(config).eval()
    processor = ConvNextHFImageProcessor(size={"shortest_edge": 64})
    folder = tmp_path / "repo"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image_path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image_path)
    return model, processor, folder, image_path


def test_folder_layout(saved_folder):
    _, _, folder, _ = saved_folder
    files = sorted(p.name for p in folder.iterdir())
    assert files == [
        "config.json",
        "configuration_convnext.py",
        "image_processing_convnext.py",
        "inference_convnext.py",
        "model.safetensors",
        "modeling_convnext.py",
        "preprocessor_config.json",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "convnext_hf"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_convnext.ConvNextConfig",
        "AutoModel": "modeling_convnext.ConvNextModel",
        "AutoModelForImageClassification": "modeling_convnext.ConvNextForImageClassification",
        "AutoBackbone": "modeling_convnext.ConvNextBackbone",
    }
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoImageProcessor"] == "image_processing_convnext.ConvNextHFImageProcessor"


def test_auto_classes_load_in_process(saved_folder):
    model, _, folder, _ = saved_folder
    loaded = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(loaded) is ConvNextForImageClassification
    assert type(transformers.AutoImageProcessor.from_pretrained(folder)) is ConvNextHFImageProcessor
    pixel_values = torch.randn(1, 3, 64, 64)
    # Two model instances may run different GEMM code paths (memory alignment, AMX or not): equal up to rounding.
    torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, atol=1e-5, rtol=1e-5)


def test_pipeline_asks_no_question_once_the_package_is_imported(saved_folder, monkeypatch):
    model, _, folder, image_path = saved_folder
    questions = []
    monkeypatch.setattr("builtins.input", lambda prompt="": questions.append(prompt) or "n")
    classifier = transformers.pipeline("image-classification", model=str(folder))
    assert questions == []
    assert type(classifier.model) is ConvNextForImageClassification
    assert type(classifier.image_processor) is ConvNextHFImageProcessor
    assert classifier(Image.open(image_path), top_k=1)[0]["label"] in model.config.label2id


PIPELINE_IN_A_TERMINAL_SCRIPT = textwrap.dedent(
    """
    import sys
    import convnext_hf
    from transformers import pipeline
    classifier = pipeline("image-classification", model=sys.argv[1])
    print("built", type(classifier.image_processor).__name__)
    """
)


@pytest.mark.slow
def test_pipeline_in_a_terminal_builds_without_the_trust_prompt(saved_folder, tmp_path):
    # In a terminal transformers' prompt would wait 15 s for an answer; here the pipeline must not ask at all.
    _, _, folder, _ = saved_folder
    primary, replica = pty.openpty()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", PIPELINE_IN_A_TERMINAL_SCRIPT, str(folder)],
            stdin=replica,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        os.close(primary)
        os.close(replica)
    assert result.returncode == 0, result.stderr
    assert "custom code" not in result.stdout + result.stderr
    assert result.stdout.split()[-2:] == ["built", "ConvNextHFImageProcessor"]


@pytest.mark.slow
def test_remote_code_loads_where_the_package_is_not_installed(saved_folder, tmp_path):
    model, processor, folder, image_path = saved_folder
    out_path = tmp_path / "remote.json"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(folder), str(image_path), str(out_path)],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=300,
    )
    remote = json.loads(out_path.read_text())
    assert remote["model_class"].endswith("modeling_convnext.ConvNextForImageClassification")
    assert not remote["model_class"].startswith("convnext_hf")
    assert remote["processor_class"] == "ConvNextHFImageProcessor"

    pixel_values = processor(Image.open(image_path), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values, output_hidden_states=True)
    # Another process computes these: equal up to float rounding, not bit for bit.
    torch.testing.assert_close(torch.tensor(remote["logits"]), outputs.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.tensor(remote["pooled"]), model.convnext(pixel_values).pooler_output, atol=1e-5, rtol=1e-5
    )
    assert remote["backbone_class"].endswith("modeling_convnext.ConvNextBackbone")
    assert not remote["backbone_class"].startswith("convnext_hf")
    assert remote["last_feature_shape"] == [1, 32, 2, 2]
    probabilities = outputs.logits.softmax(-1)[0]
    top = probabilities.topk(3)
    assert [p["label"] for p in remote["predictions"]] == [model.config.id2label[int(i)] for i in top.indices]
    assert [p["score"] for p in remote["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-6)


@pytest.mark.slow
def test_importing_the_package_needs_neither_torchvision_nor_timm():
    script = (
        "import sys, convnext_hf, convnext_hf.transformers_format, convnext_hf.complexity\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'timm')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
