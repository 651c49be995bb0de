"""`convnext-hf export` of a detector: the detection check (matching, the top-k cut, mAP), a trained RT-DETR whose
ONNX and OpenVINO graphs give PyTorch's detections, and refusals (tampered graphs, options a detector does not take)."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from convnext_hf import ConvNextConfig
from convnext_hf.cli import main as cli_main
from convnext_hf.errors import UserInputError
from convnext_hf.export import exporter
from convnext_hf.export.engines import load_engine_model
from convnext_hf.export.exporter import REPORT_FILE, ExportOptions, ParityError, export
from convnext_hf.tasks.detection.data import load_coco
from convnext_hf.tasks.detection.export import (
    IOU_MIN,
    MAP_TOLERANCE,
    SCORE_TOLERANCE,
    box_iou,
    compare_detections,
    post_process,
)
from convnext_hf.tasks.detection.hooks import prepare_for_saving
from convnext_hf.tasks.detection.model import build_detection_processor, new_detector
from convnext_hf.train import parse_args
from convnext_hf.train.shapes import SHAPES, write_detection_folder

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SIDE = 64
# 200 steps on 6 scenes (about 20 s on a 2-core CPU) give the scenes' shapes scores near 0.9: a check on
# detections that matter, not on an untrained detector's near-ties.
STEPS = 200


def detections(boxes, scores, labels, queries=None):
    queries = range(len(scores)) if queries is None else queries
    return {"boxes": np.asarray(boxes, float), "scores": np.asarray(scores, float), "labels": np.asarray(labels),
            "queries": np.asarray(queries)}  # fmt: skip


def test_box_iou():
    box = np.array([0.0, 0.0, 10.0, 10.0])
    others = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0, 0, 10, 9.9]])
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0, 0.99])
    assert box_iou(np.zeros(4), np.zeros((1, 4))).tolist() == [1.0]


def test_matching_allows_near_ties_at_the_cut_and_nothing_else():
    pytorch = detections([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.9, 0.5, 0.1], [0, 1, 2])
    # The same detections in another order, one score 4e-4 off and a box 0.05 px off.
    same = detections([[20, 20, 40, 40.05], [0, 0, 10, 10], [5, 5, 9, 9]], [0.5004, 0.9, 0.1], [1, 0, 2])
    result = compare_detections([pytorch], [same])
    assert result["failures"] == [] and result["matched"] == 3 and result["unmatched_at_the_cut"] == 0
    assert result["min_iou"] == pytest.approx(400 / 401) and result["max_score_difference"] == pytest.approx(4e-4)
    # The last detection traded for another at the same score: a near-tie at the top-k cut, which either side keeps.
    swapped = detections([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.5, 0.1005], [0, 1, 0])
    result = compare_detections([pytorch], [swapped])
    assert result["failures"] == [] and result["matched"] == 2 and result["unmatched_at_the_cut"] == 2
    # Above the cut, a missing detection, a moved box, a wrong class or a score 2e-3 off is a failure.
    for boxes, scores, labels, message in (
        ([[0, 0, 10, 10], [60, 60, 70, 70], [5, 5, 9, 9]], [0.9, 0.5, 0.1], [0, 1, 2], "1 of 3 PyTorch detections"),
        ([[0, 0, 10, 10], [20, 20, 40, 40.5], [5, 5, 9, 9]], [0.9, 0.5, 0.1], [0, 1, 2], "closest: IoU 0.976"),
        ([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.9, 0.5, 0.1], [0, 2, 2], "scores up to 0.500"),
        ([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.902, 0.5, 0.1], [0, 1, 2], "differ by up to 2.0"),
    ):
        failures = compare_detections([pytorch], [detections(boxes, scores, labels)])["failures"]
        assert any(message in failure for failure in failures), (message, failures)


def test_detections_from_queries_tied_at_the_encoders_top_k_need_no_counterpart():
    pytorch = detections([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.9, 0.5, 0.3], [0, 1, 2], [4, 7, 2])
    # Queries 7 and 2 were tied picks: the engine picked other anchors, whose detections stand in their place.
    engine = detections([[0, 0, 10, 10], [40, 40, 50, 50], [1, 1, 3, 3]], [0.9, 0.45, 0.35], [0, 1, 0], [4, 8, 9])
    result = compare_detections([pytorch], [engine], [{7, 2}])
    assert result["failures"] == [] and result["matched"] == 1
    assert result["detections_from_tied_queries"] == 2 and result["replaced_tied_detections"] == 2
    # Without the tie, the same detections fail; and the engine may not put more detections in their place than
    # PyTorch's tied detections it lacks.
    assert len(compare_detections([pytorch], [engine])["failures"]) == 2
    more = detections([[0, 0, 10, 10], [20, 20, 40, 40], [40, 40, 50, 50], [1, 1, 3, 3]], [0.9, 0.5, 0.45, 0.35],
                      [0, 1, 1, 0])  # fmt: skip
    assert compare_detections([pytorch], [more], [{2}])["failures"] == ["1 exported detections (scores up to 0.350) "
                                                                         "are not PyTorch's"]  # fmt: skip
    # A detection of a query that was not tied must be matched, ties or not elsewhere.
    failures = compare_detections([pytorch], [engine], [{2}])["failures"]
    assert failures and "1 of 3 PyTorch detections (scores up to 0.500)" in failures[0]


def test_tied_queries_are_those_at_a_cut_that_left_equal_anchors_out():
    from types import SimpleNamespace

    from convnext_hf.tasks.detection.export import QUERY_TIE_TOLERANCE, tied_queries

    # Two images, six anchors, three queries; one class. Image 0: anchors 2, 3 and 4 tie at the cut and only two
    # were picked (queries 1 and 2). Image 1: the cut is clear.
    anchors = torch.tensor([[[3.0], [2.0], [1.0], [1.0 + QUERY_TIE_TOLERANCE / 2], [1.0], [0.0]],
                            [[3.0], [2.0], [1.0], [0.5], [0.4], [0.0]]])  # fmt: skip
    picked = torch.tensor([[[3.0], [1.0], [1.0]], [[3.0], [2.0], [1.0]]])
    outputs = SimpleNamespace(logits=torch.zeros(2, 3, 1), enc_outputs_class=anchors, enc_topk_logits=picked)
    assert tied_queries(outputs) == [{1, 2}, set()]
    # A detector whose queries are learned (DETR) has none.
    assert tied_queries(SimpleNamespace(logits=torch.zeros(2, 3, 1))) == [set(), set()]


def test_post_process_names_the_query_of_each_detection(untrained):
    processor = AutoImageProcessor.from_pretrained(untrained)
    generator = torch.Generator().manual_seed(0)
    logits, pred_boxes = torch.randn(2, 10, 3, generator=generator), torch.rand(2, 10, 4, generator=generator)
    sizes = [(64, 48), (30, 40)]
    results = post_process(processor, logits, pred_boxes, sizes)
    for result, scores, boxes, (height, width) in zip(results, logits.sigmoid(), pred_boxes, sizes, strict=True):
        assert len(set(result["queries"].tolist())) > 1
        for score, label, box, query in zip(result["scores"], result["labels"], result["boxes"], result["queries"]):
            assert score == pytest.approx(float(scores[query, int(label)]), abs=1e-6)
            centre_x, centre_y, box_width, box_height = boxes[query].double().numpy()
            expected = [(centre_x - box_width / 2) * width, (centre_y - box_height / 2) * height,
                        (centre_x + box_width / 2) * width, (centre_y + box_height / 2) * height]  # fmt: skip
            np.testing.assert_allclose(box, expected, atol=1e-4)


def _processor(model):
    """The processor `convnext-hf train --image_size 64` gives the detector."""
    flags = ["--task", "object-detection", "--variant", "atto", "--image_size", str(SIDE), "--output_dir", "x"]
    return build_detection_processor(parse_args(flags).model, model)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small RT-DETR trained on six scenes, saved as `convnext-hf train` saves it, with the scenes as COCO."""
    root = tmp_path_factory.mktemp("detector")
    images_dir, annotations = write_detection_folder(str(root / "scenes"), 6, seed=0, size=SIDE)
    scenes, names = load_coco(images_dir, annotations, "train")
    assert names == list(SHAPES)
    torch.manual_seed(0)
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    model = new_detector("rt_detr", backbone, names, {"num_queries": 10, "num_denoising": 5, "decoder_layers": 1})
    processor = _processor(model)
    images = [image.convert("RGB") for image in scenes["image"]]
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    labels = [
        {"class_labels": torch.tensor(objects["category"]),
         "boxes": torch.tensor([[(x + w / 2) / SIDE, (y + h / 2) / SIDE, w / SIDE, h / SIDE]
                                for x, y, w, h in objects["bbox"]], dtype=torch.float32)}
        for objects in scenes["objects"]
    ]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    prepare_for_saving(model)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return {"model": root / "model", "images": images_dir, "annotations": annotations, "root": root,
            "pil": images, "processor": processor}  # fmt: skip


@pytest.fixture(scope="module")
def exported_onnx(trained):
    output = trained["root"] / "onnx"
    check = ["--validation_dir", trained["images"], "--validation_annotations", trained["annotations"]]
    assert cli_main(["export", "onnx", "--model", str(trained["model"]), "--output_dir", str(output), *check]) == 0
    return output


@pytest.mark.slow
def test_onnx_detector_gives_pytorch_detections(trained, exported_onnx):
    report = json.loads((exported_onnx / REPORT_FILE).read_text())
    assert report["task"] == "object-detection" and report["outputs"] == ["logits", "pred_boxes"]
    assert report["input"] == {"pixel_values": ["batch", 3, SIDE, SIDE]} and report["static_shape"] == [SIDE, SIDE]
    parity = report["parity"]
    assert parity["images"] == 6 and parity["pytorch_detections"] == 60
    assert parity["matched"] + parity["unmatched_at_the_cut"] // 2 == 60
    assert parity["min_iou"] >= IOU_MIN and parity["max_score_difference"] <= SCORE_TOLERANCE
    assert parity["map"]["difference"] <= MAP_TOLERANCE
    # The check is about detections that matter: the trained detector finds the shapes.
    assert parity["max_pytorch_score"] > 0.8 and parity["pytorch_scores_above_0.5"] >= 6
    assert parity["map"]["pytorch"] > 0.3
    assert set(parity["raw_max_abs_difference"]) == {"logits", "pred_boxes"}

    # The graph's detections at the pipeline's 0.5, in one batch of six (the batch is dynamic), are PyTorch's.
    model = load_engine_model(exported_onnx, "onnx")
    detector = AutoModelForObjectDetection.from_pretrained(str(trained["model"])).eval()
    processor = trained["processor"]
    pixel_values = processor(trained["pil"], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = detector(pixel_values=pixel_values)
    sizes = [(SIDE, SIDE)] * 6
    ours = post_process(processor, outputs.logits, outputs.pred_boxes, sizes)
    theirs = post_process(processor, *(torch.from_numpy(a) for a in model(pixel_values.numpy())), sizes)
    found = 0
    for mine, engine in zip(ours, theirs, strict=True):
        keep, kept = mine["scores"] > 0.5, engine["scores"] > 0.5
        assert mine["labels"][keep].tolist() == engine["labels"][kept].tolist()
        np.testing.assert_allclose(engine["scores"][kept], mine["scores"][keep], atol=SCORE_TOLERANCE)
        np.testing.assert_allclose(engine["boxes"][kept], mine["boxes"][keep], atol=0.05)
        found += int(keep.sum())
    assert found >= 6


@pytest.mark.slow
def test_openvino_detector_checked_on_generated_scenes(trained, tmp_path):
    output = tmp_path / "openvino"
    assert cli_main(["export", "openvino", "--model", str(trained["model"]), "--output_dir", str(output)]) == 0
    parity = json.loads((output / REPORT_FILE).read_text())["parity"]
    assert parity["check_images"] == "16 generated scenes" and parity["images"] == 16 and "map" not in parity
    assert parity["min_iou"] >= IOU_MIN and parity["max_score_difference"] <= SCORE_TOLERANCE
    assert parity["matched"] + parity["unmatched_at_the_cut"] // 2 == parity["pytorch_detections"] == 160


def _tampered(graph_path, output, offset):
    """The exported graph with `offset` added to one output (pred_boxes or logits) after the model computes it."""
    model = onnx.load(str(graph_path))
    for node in model.graph.node:
        node.output[:] = [f"{name}_raw" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(offset, dtype=np.float32), "tamper_offset"))
    model.graph.node.append(helper.make_node("Add", [f"{output}_raw", "tamper_offset"], [output]))
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    "output, offset, reason",
    [
        ("pred_boxes", 0.02, r"PyTorch detections \(scores up to 0\.[5-9]\d\d\) have no exported detection of "
                             r"their class with IoU >= 0\.99 \(the closest: IoU 0\.[0-8]"),
        ("logits", 0.05, r"matched scores differ by up to \d\.\d+e-0[12] > 0\.001"),
    ],
)  # fmt: skip
def test_a_graph_whose_detections_differ_is_refused(trained, exported_onnx, tmp_path, monkeypatch, output, offset,
                                                    reason):  # fmt: skip
    def write_tampered(exportable, example, path, opset, dynamic=True):
        onnx.save(_tampered(exported_onnx / "model.onnx", output, offset), str(path))

    monkeypatch.setattr(exporter, "export_onnx", write_tampered)
    options = ExportOptions("onnx", trained["model"], tmp_path / "out", validation_dir=trained["images"],
                            validation_annotations=trained["annotations"])  # fmt: skip
    with pytest.raises(ParityError, match="does not reproduce PyTorch's predictions: .*" + reason):
        export(options)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("untrained") / "model"
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    model = new_detector("rt_detr", backbone, list(SHAPES), {"num_queries": 10, "num_denoising": 5})
    prepare_for_saving(model)
    model.save_pretrained(folder)
    _processor(model).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantize": "int8", "calibration_dir": "calibration"}, "--quantize int8: int8 detectors are not offered"),
        ({"tolerance": 1e-3}, "--tolerance sets the raw-tensor parity"),
        ({"static_shape": (32, 32)}, "takes the images its processor makes, 64×64"),
        ({"validation_dir": "."}, "--validation_dir and --validation_annotations go together"),
    ],
)
def test_options_a_detector_does_not_take_are_refused(untrained, tmp_path, options, message):
    if "calibration_dir" in options:
        (tmp_path / "calibration").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "calibration" / "0.png")
        options = {**options, "calibration_dir": tmp_path / "calibration"}
    with pytest.raises(UserInputError, match=message):
        export(ExportOptions("onnx", untrained, tmp_path / "out", **options))
    assert not (tmp_path / "out").exists()


def test_a_detector_without_a_square_resizing_processor_is_refused(untrained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(untrained, folder)
    config = folder / "preprocessor_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "size": {"height": SIDE, "width": SIDE - 16}}))
    with pytest.raises(UserInputError, match=r"makes images of size \{'height': 64, 'width': 48\}.*square"):
        export(ExportOptions("onnx", folder, tmp_path / "out"))
    config.unlink()
    with pytest.raises(UserInputError, match="has no preprocessor_config.json"):
        export(ExportOptions("onnx", folder, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
