"""`convnext-hf export`: the golden models in ONNX Runtime and OpenVINO at sizes other than the traced one, every kind
of folder the package writes, the options, and the refusals (nothing written)."""

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from convnext_hf import ConvNextBackbone, ConvNextConfig, ConvNextModel
from convnext_hf.cli import main as cli_main
from convnext_hf.errors import OutputExistsError, UserInputError
from convnext_hf.export import parity
from convnext_hf.export.engines import load_engine_model
from convnext_hf.export.exporter import REPORT_FILE, ExportOptions, ParityError, export
from helpers import FIXTURES, golden_expected, run_convert

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

TOLERANCE = 1e-5
ENGINES = ("onnx", "openvino")
# Golden case -> (checkpoint, expected outputs in graph output order).
GOLDEN = {
    "mini": ("mini.fb.pth", ("logits",)),
    "iso-mini": ("iso-mini.fb.pth", ("logits",)),
    "upernet-mini": ("upernet-mini.fb-ade20k.pth", ("logits",)),
}


def run_export(*argv) -> int:
    return cli_main(["export", *(str(arg) for arg in argv)])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The golden checkpoints converted once per module."""
    folders = {}
    for case, (checkpoint, _) in GOLDEN.items():
        folders[case] = tmp_path_factory.mktemp("converted") / case
        assert run_convert("--checkpoint", FIXTURES / checkpoint, "--output_dir", folders[case]) == 0
    return folders


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory):
    """Each golden folder exported once per engine, with dynamic axes."""
    folders = {}

    def get(case: str, engine: str):
        if (case, engine) not in folders:
            output = tmp_path_factory.mktemp("exported") / f"{case}-{engine}"
            assert run_export(engine, "--model", converted[case], output) == 0
            folders[case, engine] = output
        return folders[case, engine]

    return get


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    # UperNet's graph takes about 30 s to export on a quiet machine (minutes on a busy one).
    "case", [pytest.param(case, marks=pytest.mark.slow) if "upernet" in case else case for case in GOLDEN]
)
def test_golden_outputs_at_other_sizes(exported, case, engine):
    """The exported graph (traced at 224²) reproduces the official outputs on the golden inputs (64², 96×160...)."""
    folder = exported(case, engine)
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["dynamic_axes"] == ["batch", "height", "width"]
    assert report["parity"]["max_relative_difference"] <= TOLERANCE
    model = load_engine_model(folder, engine)
    expected = golden_expected(case)
    for k in (0, 1):
        pixels = expected[f"input_{k}"]
        assert pixels.shape[-1] != 224
        outputs = model(pixels.numpy())
        for name, actual in zip(GOLDEN[case][1], outputs):
            reference = expected[f"{name}_{k}"].numpy()
            assert parity.relative_difference(reference, actual) <= TOLERANCE, (case, engine, name, k)


def test_folder_layout_for_optimum(exported, converted):
    """model.onnx / openvino_model.xml+bin beside config.json and preprocessor_config.json, and the report."""
    onnx_folder, openvino_folder = exported("mini", "onnx"), exported("mini", "openvino")
    # Exactly the files docs/deployment.md's output tree shows: the graph, the configs, the code, the report.
    code = {path.name for path in converted["mini"].glob("*.py")}
    assert len(code) == 4
    shared = {"config.json", "preprocessor_config.json", REPORT_FILE} | code
    assert {path.name for path in onnx_folder.iterdir()} == {"model.onnx"} | shared
    assert {path.name for path in openvino_folder.iterdir()} == {"openvino_model.xml", "openvino_model.bin"} | shared
    assert (onnx_folder / "config.json").read_text() == (converted["mini"] / "config.json").read_text()
    report = json.loads((onnx_folder / REPORT_FILE).read_text())
    assert report["task"] == "image-classification" and report["outputs"] == ["logits"]
    assert [entry["input_shape"] for entry in report["parity"]["inputs"]] == [[2, 3, 224, 224], [1, 3, 169, 143]]


def test_serving_snippet(exported, converted):
    """docs/deployment.md's snippet: the exported folder's own processor (remote code) feeding ONNX Runtime."""
    import onnxruntime
    from transformers import AutoImageProcessor

    folder = exported("mini", "onnx")
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    session = onnxruntime.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    (logits,) = session.run(["logits"], {"pixel_values": pixel_values})
    reference = transformers.AutoModelForImageClassification.from_pretrained(converted["mini"]).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixel_values)).logits.numpy()
    assert parity.relative_difference(expected, logits) <= TOLERANCE


@pytest.mark.slow
def test_onnx_axes_are_named(exported):
    import onnx

    graph = onnx.load(str(exported("upernet-mini", "onnx") / "model.onnx")).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [
        "batch", 3, "height", "width"
    ]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [
        "batch", 6, "height", "width"
    ]


@pytest.mark.parametrize("kind", ["backbone", "image-feature-extraction"])
def test_backbone_and_feature_extractor(tmp_path, kind, tiny_config_kwargs):
    """A backbone exports every feature map as a named output; the trunk its last map and pooled vector."""
    torch.manual_seed(0)
    config = ConvNextConfig(**tiny_config_kwargs, out_features=["stem", "stage1", "stage2", "stage3", "stage4"])
    model = (ConvNextBackbone if kind == "backbone" else ConvNextModel)(config).eval()
    model.save_pretrained(tmp_path / "model")
    assert run_export("onnx", "--model", tmp_path / "model", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    names = config.out_features if kind == "backbone" else ["last_hidden_state", "pooler_output"]
    assert report["task"] == kind and report["outputs"] == names
    pixels = torch.randn(3, 3, 72, 104)
    with torch.no_grad():
        outputs = model(pixels)
    references = outputs.feature_maps if kind == "backbone" else (outputs.last_hidden_state, outputs.pooler_output)
    actuals = load_engine_model(tmp_path / "out", "onnx")(pixels.numpy())
    assert len(actuals) == len(names)
    for reference, actual in zip(references, actuals):
        assert parity.relative_difference(reference.numpy(), actual) <= TOLERANCE


@pytest.mark.parametrize("engine", ENGINES)
def test_a_model_at_its_total_stride_exports(tmp_path, engine, tiny_config_kwargs):
    """Images of 32×32, the total stride of a four-stage model: the second parity input stays above the stride."""
    from convnext_hf import ConvNextForImageClassification, ConvNextHFImageProcessor

    torch.manual_seed(0)
    config = ConvNextConfig(**tiny_config_kwargs)
    ConvNextForImageClassification(config).eval().save_pretrained(tmp_path / "model")
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path / "model")
    assert run_export(engine, "--model", tmp_path / "model", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert [entry["input_shape"] for entry in report["parity"]["inputs"]] == [[2, 3, 32, 32], [1, 3, 33, 35]]
    assert report["parity"]["max_relative_difference"] <= TOLERANCE


def test_dynamic_parity_inputs_are_odd_unequal_and_not_below_the_stride():
    assert parity.parity_shapes(224, None, 32) == [(2, 224, 224), (1, 169, 143)]
    for image_size in range(16, 129):
        for stride in (16, 32):
            (_, size, _), (batch, height, width) = parity.parity_shapes(image_size, None, stride)
            assert (size, batch) == (image_size, 1)
            assert height > stride and width > stride and height % 2 == width % 2 == 1 and height != width


def test_static_shape_float16_and_opset(converted, tmp_path):
    """--static_shape fixes height and width (batch stays dynamic); --dtype float16 is checked at 1e-2; --opset."""
    output = tmp_path / "static"
    argv = ["openvino", "--model", converted["mini"], output, "--static-shape", 96, 160, "--dtype", "float16"]
    assert run_export(*argv) == 0
    report = json.loads((output / REPORT_FILE).read_text())
    assert report["static_shape"] == [96, 160] and report["dtype"] == "float16"
    assert report["parity"]["tolerance"] == parity.TOLERANCES["float16"]
    assert [entry["input_shape"] for entry in report["parity"]["inputs"]] == [[2, 3, 96, 160], [1, 3, 96, 160]]
    expected = golden_expected("mini")
    logits = load_engine_model(output, "openvino")(expected["input_1"].numpy())[0]
    assert parity.relative_difference(expected["logits_1"].numpy(), logits) <= 1e-2

    output = tmp_path / "half-onnx"
    assert run_export("onnx", "--model", converted["mini"], output, "--dtype", "float16", "--opset", 20) == 0
    import onnx

    model = onnx.load(str(output / "model.onnx"))
    assert model.opset_import[0].version == 20
    assert {init.data_type for init in model.graph.initializer if len(init.dims) > 1} == {onnx.TensorProto.FLOAT16}
    logits = load_engine_model(output, "onnx")(expected["input_1"].numpy())[0]
    assert parity.relative_difference(expected["logits_1"].numpy(), logits) <= 1e-2


def test_refusals_leave_nothing_behind(converted, tmp_path, monkeypatch):
    """A disagreement beyond tolerance, an existing output, and incomplete int8 options are refused by name."""
    output = tmp_path / "refused"
    options = ExportOptions("onnx", converted["iso-mini"], output, tolerance=1e-9)
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        export(options)
    assert not output.exists() and not list(tmp_path.iterdir())

    (output / "keep").mkdir(parents=True)
    with pytest.raises(OutputExistsError):
        export(ExportOptions("onnx", converted["iso-mini"], output))
    assert [path.name for path in output.iterdir()] == ["keep"]

    with pytest.raises(UserInputError, match="--calibration_dir"):
        export(ExportOptions("onnx", converted["iso-mini"], tmp_path / "x", quantize="int8"))
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    Image.new("RGB", (8, 8)).save(calibration / "0.png")
    int8_options = {"quantize": "int8", "calibration_dir": calibration, "validation_dir": calibration}
    with pytest.raises(UserInputError, match="scores classifiers"):
        export(ExportOptions("onnx", converted["upernet-mini"], tmp_path / "x", **int8_options))
    with pytest.raises(UserInputError, match="config.json"):
        export(ExportOptions("onnx", tmp_path, tmp_path / "x"))
    assert run_export("onnx", "--model", tmp_path / "missing", tmp_path / "x") == 2
    assert run_export("onnx", "--model", converted["mini"], tmp_path / "x", "--opset", 17) == 2


def test_relative_difference_definition():
    reference = np.array([[1.0, -4.0], [2.0, 0.0]], dtype=np.float32)
    actual = reference + np.array([[0.0, 0.0], [0.0, 2e-4]], dtype=np.float32)
    assert parity.relative_difference(reference, actual) == pytest.approx(5e-5)
    assert parity.relative_difference(reference, actual[:1]) == float("inf")
