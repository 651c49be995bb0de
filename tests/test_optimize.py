"""optimize_for_inference and the plain model's fast paths: parity with the golden outputs, dtypes, memory formats,
isotropic and backbone models, torch.compile without graph breaks, and the benchmark script's smoke run."""

from __future__ import annotations

import copy
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convnext_hf import ConvNextBackbone, ConvNextConfig, ConvNextForImageClassification, inference_convnext
from convnext_hf.inference_convnext import ConvNextFoldedLayer
from convnext_hf.modeling_convnext import ConvNextLayer
from helpers import FIXTURES, golden_expected

ROOT = Path(__file__).resolve().parent.parent
CASES = (0, 1)
# Relative to the largest |logit|: bfloat16 keeps 8 bits of mantissa, and errors add up over the blocks.
HALF_PRECISION_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory: pytest.TempPathFactory) -> ConvNextForImageClassification:
    """The golden 'mini' checkpoint in transformers' built-in layout, loaded by our class."""
    folder = tmp_path_factory.mktemp("mini")
    shutil.copy(FIXTURES / "mini.transformers.config.json", folder / "config.json")
    shutil.copy(FIXTURES / "mini.transformers.safetensors", folder / "model.safetensors")
    return ConvNextForImageClassification.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    """Inputs and the official implementation's outputs for the golden checkpoint."""
    return golden_expected("mini")


@pytest.fixture(scope="module")
def optimized(golden_model: ConvNextForImageClassification) -> ConvNextForImageClassification:
    """The golden model after optimize_for_inference() in float32."""
    return copy.deepcopy(golden_model).optimize_for_inference()


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every LayerNorm affine and layer scale away from identity, so that folding them shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale_parameter") or ("norm" in name and name.endswith("weight")):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) + 0.5)
            elif "norm" in name and name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def images(batch: int = 2, size: int = 64) -> torch.Tensor:
    """Reproducible normalized images."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """max|output - reference| / max|reference|."""
    return ((output.float() - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("case", CASES)
def test_optimized_float32_matches_golden_logits_pooled_and_stages(
    optimized: ConvNextForImageClassification, expected: dict[str, torch.Tensor], case: int
) -> None:
    with torch.inference_mode():
        outputs = optimized(expected[f"input_{case}"], output_hidden_states=True)
        pooled = optimized.convnext(expected[f"input_{case}"]).pooler_output
    torch.testing.assert_close(outputs.logits, expected[f"logits_{case}"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, expected[f"pooled_{case}"], atol=1e-5, rtol=1e-5)
    for stage in range(1, 5):
        torch.testing.assert_close(
            outputs.hidden_states[stage], expected[f"stage{stage}_{case}"], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("case", CASES)
def test_optimized_matches_unoptimized_within_1e4_fused_chunked_and_unfused(
    golden_model: ConvNextForImageClassification,
    optimized: ConvNextForImageClassification,
    expected: dict[str, torch.Tensor],
    case: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pixel_values = expected[f"input_{case}"]
    with torch.inference_mode():
        reference = golden_model(pixel_values, output_hidden_states=True)
        fused = optimized(pixel_values, output_hidden_states=True)
        # Chunks of 5 pixels in the first stage (16 channels, 64 float32 hidden values each), 1 in the last.
        monkeypatch.setattr(inference_convnext, "LARGE_ALLOCATION_BYTES", 0)
        monkeypatch.setattr(inference_convnext, "CHUNK_BYTES", 5 * 64 * 4)
        chunked = optimized(pixel_values, output_hidden_states=True)
        monkeypatch.setattr(inference_convnext, "onednn_can_run", lambda features: False)
        unfused = optimized(pixel_values, output_hidden_states=True)
    for outputs in (fused, chunked, unfused):
        assert (outputs.logits - reference.logits).abs().max() < 1e-4
        for ours, theirs in zip(outputs.hidden_states, reference.hidden_states, strict=True):
            assert (ours - theirs).abs().max() < 1e-4


def test_optimized_model_is_folded_in_eval_mode_without_gradients_and_channels_last(
    optimized: ConvNextForImageClassification, expected: dict[str, torch.Tensor]
) -> None:
    layers = [module for module in optimized.modules() if isinstance(module, (ConvNextLayer, ConvNextFoldedLayer))]
    assert len(layers) == 1 + 2 + 3 + 1 and all(isinstance(layer, ConvNextFoldedLayer) for layer in layers)
    assert not any(module.training for module in optimized.modules())
    assert not any(parameter.requires_grad for parameter in optimized.parameters())
    assert optimized.is_optimized_for_inference
    with torch.inference_mode():
        hidden_states = optimized(expected["input_0"], output_hidden_states=True).hidden_states
    assert all(state.is_contiguous(memory_format=torch.channels_last) for state in hidden_states)


def test_folding_puts_layernorm_affine_into_pwconv1_and_layer_scale_into_pwconv2(
    golden_model: ConvNextForImageClassification,
) -> None:
    layer = golden_model.convnext.encoder.stages[1].layers[0]
    folded = ConvNextFoldedLayer(layer, "gelu")
    features = torch.randn(3, 32, dtype=torch.float64)
    normalized = torch.nn.functional.layer_norm(features, (32,))
    with torch.no_grad():
        reference = layer.layer_scale_parameter.double() * torch.nn.functional.linear(
            torch.nn.functional.linear(
                normalized * layer.layernorm.weight.double() + layer.layernorm.bias.double(),
                layer.pwconv1.weight.double(),
                layer.pwconv1.bias.double(),
            ),
            layer.pwconv2.weight.double(),
            layer.pwconv2.bias.double(),
        )
        result = folded.pwconv2(folded.pwconv1(normalized.float())).double()
    torch.testing.assert_close(result, reference, atol=1e-5, rtol=1e-5)
    # The original block is left as it was.
    assert layer.pwconv1.weight.requires_grad and isinstance(layer.layernorm, torch.nn.LayerNorm)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_optimized_half_precision_within_tolerance_of_golden(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    model = copy.deepcopy(golden_model).optimize_for_inference(dtype=dtype)
    assert model.dtype == dtype
    for case in CASES:
        with torch.inference_mode():
            logits = model(expected[f"input_{case}"]).logits
        assert logits.dtype == dtype
        assert relative_error(logits, expected[f"logits_{case}"]) < HALF_PRECISION_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_plain_model_runs_in_half_precision_from_float32_images(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    model = copy.deepcopy(golden_model).to(dtype)
    with torch.inference_mode():
        logits = model(expected["input_0"]).logits
    assert logits.dtype == dtype
    assert relative_error(logits, expected["logits_0"]) < HALF_PRECISION_TOLERANCE[dtype]


@pytest.mark.parametrize("model_name", ["plain", "optimized"])
def test_channels_last_inputs_give_the_golden_logits(
    golden_model: ConvNextForImageClassification,
    optimized: ConvNextForImageClassification,
    expected: dict[str, torch.Tensor],
    model_name: str,
) -> None:
    model = {"plain": golden_model, "optimized": optimized}[model_name]
    pixel_values = expected["input_1"].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = model(pixel_values).logits
    torch.testing.assert_close(logits, expected["logits_1"], atol=1e-5, rtol=1e-5)


def test_contiguous_layout_option_keeps_results(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor]
) -> None:
    model = copy.deepcopy(golden_model).optimize_for_inference(channels_last=False)
    stem = model.convnext.embeddings.patch_embeddings.weight
    assert stem.is_contiguous() and not stem.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = model(expected["input_0"]).logits
    torch.testing.assert_close(logits, expected["logits_0"], atol=1e-5, rtol=1e-5)


def test_second_call_does_not_fold_again(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor]
) -> None:
    model = copy.deepcopy(golden_model).optimize_for_inference()
    with torch.inference_mode():
        once = model(expected["input_0"]).logits
        weights = {name: parameter.clone() for name, parameter in model.named_parameters()}
        model.optimize_for_inference()
        twice = model(expected["input_0"]).logits
    torch.testing.assert_close(once, twice, atol=1e-6, rtol=1e-6)
    assert all(torch.equal(parameter, weights[name]) for name, parameter in model.named_parameters())


def test_optimized_model_refuses_training_and_saving(
    golden_model: ConvNextForImageClassification, tmp_path: Path
) -> None:
    model = copy.deepcopy(golden_model).optimize_for_inference()
    with pytest.raises(RuntimeError, match=r"cannot train.*from_pretrained\(\)"):
        model.train()
    with pytest.raises(RuntimeError, match=r"cannot train"):
        model.convnext.encoder.stages[0].layers[0].train()
    assert not any(module.training for module in model.modules())
    model.eval()
    with pytest.raises(RuntimeError, match=r"cannot save.*from_pretrained\(\)"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    # The original still trains and saves.
    original = copy.deepcopy(golden_model).train()
    original.save_pretrained(tmp_path / "original")
    assert (tmp_path / "original" / "model.safetensors").exists()


def test_gradients_with_respect_to_the_input_still_flow(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor]
) -> None:
    plain = copy.deepcopy(golden_model)
    model = copy.deepcopy(golden_model).optimize_for_inference()
    gradients = []
    for candidate in (plain, model):
        pixel_values = expected["input_0"].clone().requires_grad_(True)
        candidate(pixel_values).logits[:, 0].sum().backward()
        gradients.append(pixel_values.grad)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-6, rtol=1e-4)


def outputs_before_and_after_optimization(model: torch.nn.Module) -> tuple[object, object]:
    """The outputs, hidden states included, of `model` and of an optimized copy of it on the same images."""
    optimized = copy.deepcopy(model).optimize_for_inference()
    pixel_values = images()
    with torch.inference_mode():
        return model(pixel_values, output_hidden_states=True), optimized(pixel_values, output_hidden_states=True)


def test_isotropic_model_optimizes() -> None:
    config = ConvNextConfig.from_variant("isotropic-small", hidden_sizes=[32], depths=[3], num_labels=5)
    torch.manual_seed(0)
    reference, outputs = outputs_before_and_after_optimization(randomized(ConvNextForImageClassification(config)))
    torch.testing.assert_close(outputs.logits, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.hidden_states[-1], reference.hidden_states[-1], atol=1e-5, rtol=1e-5)


def test_backbone_feature_maps_and_hidden_states_survive_optimization() -> None:
    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], out_features=["stage1", "stage3"])
    torch.manual_seed(0)
    reference, outputs = outputs_before_and_after_optimization(randomized(ConvNextBackbone(config)))
    assert len(outputs.feature_maps) == 2
    for ours, theirs in zip(outputs.feature_maps, reference.feature_maps, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(outputs.hidden_states, reference.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_auto_dtype_picks_bfloat16_only_where_the_cpu_has_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = inference_convnext.inference_dtype
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve("auto", cpu, torch.float32) == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve("auto", cpu, torch.float32) == torch.float32
    assert resolve(None, cpu, torch.float16) == torch.float16
    assert resolve(torch.bfloat16, cpu, torch.float32) == torch.bfloat16


@pytest.mark.parametrize("dtype", ["bfloat16", torch.int8, 16])
def test_bad_dtype_is_refused_with_the_accepted_values(
    golden_model: ConvNextForImageClassification, dtype: object
) -> None:
    model = copy.deepcopy(golden_model)
    with pytest.raises(TypeError, match=r"dtype must be None.*'auto'.*torch\.bfloat16"):
        model.optimize_for_inference(dtype=dtype)
    assert not model.is_optimized_for_inference


@pytest.mark.slow
def test_plain_and_optimized_models_compile_without_graph_breaks(
    golden_model: ConvNextForImageClassification, expected: dict[str, torch.Tensor]
) -> None:
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break; the eager backend checks the tracing without the C++ compile time.
    compiled = torch.compile(golden_model, fullgraph=True, backend="eager")
    optimized = copy.deepcopy(golden_model).optimize_for_inference(
        compile=True, compile_options={"fullgraph": True, "backend": "eager"}
    )
    with torch.inference_mode():
        for model in (compiled, optimized):
            logits = model(expected["input_0"], output_hidden_states=True).logits
            torch.testing.assert_close(logits, expected["logits_0"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_optimized_model_compiles_with_inductor() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    model = randomized(ConvNextForImageClassification(config))
    compiled = copy.deepcopy(model).optimize_for_inference(compile=True)
    pixel_values = images(1, 32)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_benchmark_quick_run_checks_agreement_and_writes_results(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--quick", "--output_dir", str(tmp_path)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(command + ["--dtypes", "float32"], check=True, env=environment, capture_output=True, timeout=300)
    results = json.loads((tmp_path / "benchmark.json").read_text())
    implementations = {(row["mode"], row["dtype"], row["implementation"]) for row in results["rows"]}
    # The ONNX Runtime and OpenVINO rows come with the export extra, which the test extra installs.
    assert implementations == {
        ("inference", "float32", "ours eager"),
        ("inference", "float32", "ours optimized"),
        ("inference", "float32", "built-in eager"),
        ("inference", "float32", "onnxruntime"),
        ("inference", "float32", "openvino"),
        ("inference", "int8", "onnxruntime int8"),
        ("inference", "int8", "openvino int8"),
        ("train", "float32", "ours eager"),
        ("train", "float32", "built-in eager"),
        ("train", "float32", "ours eager + checkpointing"),
    }
    assert all(row["max_relative_difference"] < 1e-4 for row in results["rows"] if row["dtype"] == "float32")
    assert all(row["max_relative_difference"] < 0.2 for row in results["rows"])
    assert {row["batch"] for row in results["rows"] if row["mode"] == "inference"} == {1, 2}
    assert all(row["roofline_fraction"] > 0 for row in results["rows"] if row["mode"] == "inference")
    assert (tmp_path / "benchmark.png").read_bytes().startswith(b"\x89PNG")
    again = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr


def test_performance_doc_shows_the_committed_benchmark_run() -> None:
    benchmark = runpy.run_path(str(ROOT / "benchmarks" / "benchmark.py"))
    results = json.loads((ROOT / "benchmarks" / "results" / "benchmark.json").read_text())
    document = (ROOT / "docs" / "performance.md").read_text()
    assert results["command"] in document
    assert benchmark["TABLE_HEADER"] in document
    for row in results["rows"]:
        assert benchmark["format_row"](row) in document
    assert benchmark["TARGETS_HEADER"] in document
    for target in results["targets"]:
        assert benchmark["format_target"](target) in document
    assert (ROOT / "benchmarks" / "results" / "benchmark.png").read_bytes().startswith(b"\x89PNG")
