"""Object detection: COCO data checks, box geometry of the augmentation, COCO metrics by hand, batches, the detector
and its sizing, the detection recipe, and (slow) a run whose folder the pipeline loads and evaluate scores alike."""

import json
import runpy
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from convnext_hf import ConvNextConfig, ConvNextForImageClassification
from convnext_hf.demo import DemoSettings
from convnext_hf.demo import main as demo_main
from convnext_hf.errors import UserInputError
from convnext_hf.evaluation_command import main as evaluate_main
from convnext_hf.tasks import TASKS
from convnext_hf.tasks.detection.augment import BoxAugment, crop_boxes, hflip_boxes, zoom
from convnext_hf.tasks.detection.batches import collate_detection, with_detection_transforms
from convnext_hf.tasks.detection.data import coco_ground_truth, load_coco, load_detection_data
from convnext_hf.tasks.detection.demo import detect_held_out, detection_arguments
from convnext_hf.tasks.detection.metrics import coco_metrics
from convnext_hf.tasks.detection.model import build_detection_processor, build_detector, new_detector
from convnext_hf.tasks.detection.scoring import pipeline_detections
from convnext_hf.train import main as train_main
from convnext_hf.train import parse_args
from convnext_hf.train.arguments import DataArguments
from convnext_hf.train.data import ImageData
from convnext_hf.train.optim import layer_id, num_layers
from convnext_hf.train.recipes import recipe_defaults
from convnext_hf.train.shapes import (
    SEGMENTATION_LABELS,
    SHAPES,
    draw_detection_scene,
    draw_scene,
    write_detection_folder,
)

# Measured 0.372 on this test's scenes under COCO's protocol (an AMD EPYC, one loader worker; 0.258 with the loader in
# the main process, whose augmentation draws another random stream); a detector that has not learned to localize
# scores near 0.
MAP_AFTER_300_STEPS = 0.1
TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_queries": 10, "num_denoising": 5}


def _coco_folder(root: Path, boxes: list[list[float]], categories: list[int] | None = None, size=(40, 30)) -> Path:
    """Two images of `size` and one annotation file whose boxes all belong to the first image."""
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", size, (90, 90, 90)).save(root / "images" / name)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": size[0], "height": size[1]},
                   {"id": 9, "file_name": "b.png", "width": size[0], "height": size[1]}],
        "annotations": [{"id": i + 1, "image_id": 7, "category_id": (categories or [1] * len(boxes))[i], "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0} for i, box in enumerate(boxes)],
        "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
    }  # fmt: skip
    path = root / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_loading_orders_categories_by_id_and_keeps_the_boxes(tmp_path):
    path = _coco_folder(tmp_path, [[1, 2, 10, 5], [0, 0, 40, 30]], [2, 1])
    dataset, names = load_coco(str(tmp_path / "images"), str(path), "train")
    assert names == ["cat", "dog"]
    assert dataset["image_id"] == [7, 9]
    first = dataset[0]
    assert first["objects"]["bbox"] == [[1, 2, 10, 5], [0, 0, 40, 30]]
    assert first["objects"]["category"] == [1, 0]
    assert first["image"].size == (40, 30) and dataset[1]["objects"]["bbox"] == []
    truth = coco_ground_truth(dataset, names)
    assert [a["category_id"] for a in truth["annotations"]] == [1, 0]
    assert truth["categories"] == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]


@pytest.mark.parametrize(
    "boxes, categories, message",
    [
        ([[1, 1, 5, 5], [1, 1, 5, 5], [2, 2, 3, 3]], [5, 5, 1], r"2 annotation\(s\) .* category ids .*: 5 \(2×\)"),
        ([[30, 1, 15, 5], [1, 1, 5, 5]], [1, 1], r"1 box\(es\) .*: outside its 40×30 image \(1×\)"),
        ([[1, 1, 0, 5], [1, 1, 5, -1]], [1, 1], r"2 box\(es\) .*: degenerate .* \(2×\)"),
    ],
)
def test_bad_annotations_are_refused_by_name_with_counts(tmp_path, boxes, categories, message):
    path = _coco_folder(tmp_path, boxes, categories)
    with pytest.raises(UserInputError, match=message):
        load_coco(str(tmp_path / "images"), str(path), "train")


def test_bad_boxes_can_be_skipped_and_missing_images_are_named(tmp_path):
    path = _coco_folder(tmp_path, [[30, 1, 15, 5], [1, 1, 5, 5]])
    dataset, _ = load_coco(str(tmp_path / "images"), str(path), "train", on_bad_box="skip")
    assert dataset[0]["objects"]["bbox"] == [[1, 1, 5, 5]]
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(UserInputError, match=r"(?s)1 of the 2 train image\(s\).*b\.png: missing"):
        load_coco(str(tmp_path / "images"), str(path), "train", on_bad_box="skip")
    dataset, _ = load_coco(str(tmp_path / "images"), str(path), "train", on_bad_image="skip", on_bad_box="skip")
    assert dataset["image_id"] == [7]


def test_hub_objects_layout_loads_offline_from_a_local_dataset(tmp_path):
    category = datasets.ClassLabel(names=["cat", "dog"])
    features = datasets.Features({
        "image_id": datasets.Value("int64"), "image": datasets.Image(),
        "objects": {"id": datasets.List(datasets.Value("int64")), "area": datasets.List(datasets.Value("float32")),
                    "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                    "category": datasets.List(category)},
    })  # fmt: skip
    images = [Image.new("RGB", (20, 10), (9, 9, 9)) for _ in range(3)]
    rows = {
        "image_id": [3, 4, 5], "image": images,
        "objects": [{"id": [1], "area": [8.0], "bbox": [[1, 1, 4, 2]], "category": [1]},
                    {"id": [2, 3], "area": [1, 4], "bbox": [[0, 0, 1, 1], [2, 2, 2, 2]], "category": [0, 1]},
                    {"id": [], "area": [], "bbox": [], "category": []}],
    }  # fmt: skip
    (tmp_path / "data").mkdir()
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.select([0, 1]).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    dataset.select([2]).to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    data = load_detection_data(DataArguments(dataset_name=str(tmp_path)), seed=0, cache_dir=str(tmp_path / "cache"))
    assert data.label_names == ["cat", "dog"]
    assert data.train["image_id"] == [3, 4] and data.validation["image_id"] == [5]
    assert data.train[1]["objects"]["bbox"] == [[0, 0, 1, 1], [2, 2, 2, 2]]
    assert data.train[1]["objects"]["category"] == [0, 1]


def test_hub_objects_layout_with_plain_ids_takes_id2label_and_keeps_areas_and_crowd_flags(tmp_path):
    features = datasets.Features({
        "image": datasets.Image(),
        "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                    "category": datasets.List(datasets.Value("int64")),
                    "area": datasets.List(datasets.Value("float32")),
                    "iscrowd": datasets.List(datasets.Value("int64"))},
    })  # fmt: skip
    rows = {
        "image": [Image.new("RGB", (20, 10), (9, 9, 9)) for _ in range(2)],
        "objects": [{"bbox": [[1, 1, 4, 2]], "category": [1], "area": [5.5], "iscrowd": [0]},
                    {"bbox": [[0, 0, 10, 10], [2, 2, 2, 2]], "category": [0, 1], "area": [60, 3], "iscrowd": [1, 0]}],
    }  # fmt: skip
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "data" / "train.parquet"))
    args = DataArguments(dataset_name=str(tmp_path), id2label='{"0": "cat", "1": "dog"}', train_val_split=0.0)
    data = load_detection_data(args, seed=0, cache_dir=str(tmp_path / "cache"))
    assert data.label_names == ["cat", "dog"]
    truth = coco_ground_truth(data.train, data.label_names)
    assert [(a["category_id"], a["area"], a["iscrowd"]) for a in truth["annotations"]] == [
        (1, 5.5, 0), (0, 60.0, 1), (1, 3.0, 0)]  # fmt: skip


def test_box_geometry_of_flip_crop_and_zoom():
    boxes = np.array([[10.0, 20.0, 30.0, 10.0], [90.0, 0.0, 10.0, 10.0]])
    np.testing.assert_array_equal(hflip_boxes(boxes, 100), [[60, 20, 30, 10], [0, 0, 10, 10]])
    # Crop (20, 15)-(100, 40): the first box keeps 20 of its 30 columns and 5 of its 10 rows (a third of its area:
    # kept, clipped), the second none of its rows (dropped).
    kept, keep = crop_boxes(boxes, left=20, top=15, width=80, height=25)
    np.testing.assert_array_equal(keep, [True, False])
    np.testing.assert_array_equal(kept, [[0, 5, 20, 10]])
    # A box with a fifth of its area left is gone (below MIN_VISIBLE_FRACTION 0.25).
    _, keep = crop_boxes(np.array([[0.0, 0.0, 10.0, 10.0]]), left=8, top=0, width=50, height=50)
    np.testing.assert_array_equal(keep, [False])
    image = Image.new("RGB", (100, 50), (10, 20, 30))
    zoomed, kept, keep = zoom(image, boxes, factor=2.0, offset=(0.0, 0.0))
    assert zoomed.size == (100, 50)
    np.testing.assert_array_equal(keep, [True, False])
    np.testing.assert_array_equal(kept, [[20, 40, 60, 10]])
    shrunk, moved, keep = zoom(image, boxes, factor=0.5, offset=(1.0, 1.0))
    assert shrunk.size == (100, 50) and keep.all()
    np.testing.assert_array_equal(moved, [[55, 35, 15, 5], [95, 25, 5, 5]])


def test_augmentation_keeps_boxes_on_their_shapes():
    # A white square on black: after any photometric jitter, zoom and flip, its box still frames the bright pixels.
    import random

    random.seed(0)
    canvas = np.zeros((64, 64, 3), dtype=np.uint8)
    canvas[10:30, 20:44] = 255
    augment = BoxAugment(scale_range=(0.6, 1.6), hflip=0.5, photometric=0.2)
    seen = 0
    for _ in range(20):
        image, boxes, categories = augment(Image.fromarray(canvas), np.array([[20.0, 10.0, 24.0, 20.0]]), np.array([2]))
        bright = np.argwhere(np.asarray(image.convert("L")) > 128)
        if len(boxes) == 0:
            continue
        seen += 1
        (x, y, w, h), = boxes
        assert categories.tolist() == [2]
        assert bright[:, 1].min() >= np.floor(x) - 1 and bright[:, 1].max() <= np.ceil(x + w) + 1
        assert bright[:, 0].min() >= np.floor(y) - 1 and bright[:, 0].max() <= np.ceil(y + h) + 1
    assert seen >= 15


def test_coco_metrics_by_hand():
    truth = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
        ],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "fox"}],
    }
    detections = [
        # IoU 0.62 with the cat: a match at the thresholds 0.50, 0.55 and 0.60 only, so AP 3/10.
        {"image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 6.2], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.8},
    ]
    scores = coco_metrics(truth, detections)
    assert scores["per_class_ap"] == {"cat": pytest.approx(0.3), "dog": pytest.approx(1.0), "fox": None}
    assert scores["map"] == pytest.approx(0.65)
    assert scores["map_50"] == pytest.approx(1.0)
    assert scores["map_75"] == pytest.approx(0.5)
    assert scores["map_large"] == -1.0


def _tiny_detector(name="rt_detr", labels=("circle", "square", "triangle")):
    backbone = ConvNextConfig(**{k: v for k, v in TINY.items() if k in ("hidden_sizes", "depths")})
    return new_detector(name, backbone, list(labels), {"num_queries": 10, "num_denoising": 5})


def test_detector_is_sized_to_its_backbone():
    atto = new_detector("rt_detr", ConvNextConfig.from_variant("atto"), ["a", "b"])
    config = atto.config
    assert (config.d_model, config.decoder_layers, config.num_queries, config.num_denoising) == (128, 3, 100, 33)
    assert list(config.encoder_in_channels) == [80, 160, 320] and list(config.feat_strides) == [8, 16, 32]
    assert config.backbone_config.out_features == ["stage2", "stage3", "stage4"]
    tiny = new_detector("rt_detr", ConvNextConfig.from_variant("tiny"), ["a", "b"]).config
    assert (tiny.d_model, tiny.decoder_layers, tiny.num_queries) == (256, 6, 300)
    # A d_model override carries the widths that follow from it, and nothing else.
    for variant, d_model, layers, heads in (("atto", 64, 3, 4), ("tiny", 128, 6, 4), ("atto", 256, 3, 8)):
        config = new_detector("rt_detr", ConvNextConfig.from_variant(variant), ["a"], {"d_model": d_model}).config
        assert (config.encoder_hidden_dim, config.encoder_ffn_dim, config.decoder_ffn_dim) == (
            d_model, 4 * d_model, 4 * d_model)  # fmt: skip
        assert list(config.decoder_in_channels) == [d_model] * 3 and config.decoder_layers == layers
        assert config.encoder_attention_heads == config.decoder_attention_heads == heads


@pytest.mark.parametrize("name", ["rt_detr", "deformable_detr", "detr"])
def test_detectors_take_the_convnext_backbone_and_train_a_step(name):
    model = _tiny_detector(name)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.7, 0.3, 0.2]])
    labels = [{"class_labels": torch.tensor([0, 2]), "boxes": boxes}]
    torch.manual_seed(0)
    outputs = model(pixel_values=torch.randn(1, 3, 64, 64), labels=labels)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    stem = next(p for n, p in model.named_parameters() if "embeddings.patch_embeddings.weight" in n)
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_detector_from_a_classification_folder_gets_its_backbone_weights(tmp_path):
    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=5)
    classifier = ConvNextForImageClassification(config)
    classifier.save_pretrained(tmp_path / "classifier")
    args = parse_args(["--task", "object-detection", "--model_name_or_path", str(tmp_path / "classifier"),
                       "--config_overrides", '{"num_queries": 10}', "--output_dir", "x"])  # fmt: skip
    model = build_detector(args.model, ["a", "b"])
    backbone = model.model.backbone.model
    trunk = classifier.convnext.state_dict()
    for name, tensor in backbone.state_dict().items():
        if not name.startswith("hidden_states_norms"):
            torch.testing.assert_close(tensor, trunk[name], rtol=0, atol=0)
    assert model.config.num_queries == 10 and model.config.id2label == {0: "a", 1: "b"}


def test_a_detector_folder_with_renamed_classes_gets_fresh_class_heads_and_keeps_the_rest(tmp_path):
    original = _tiny_detector()
    original.save_pretrained(tmp_path / "detector")
    base = ["--task", "object-detection", "--model_name_or_path", str(tmp_path / "detector"), "--output_dir", "x"]
    with pytest.raises(UserInputError, match=r"pass --replace_head to train new class heads"):
        build_detector(parse_args(base).model, ["cat", "dog", "fox"])
    kept = build_detector(parse_args(base).model, ["circle", "square", "triangle"]).state_dict()
    renamed = build_detector(parse_args([*base, "--replace_head"]).model, ["cat", "dog", "fox"]).state_dict()
    before = original.state_dict()
    heads = [name for name in before if "class_embed" in name or "enc_score_head" in name]
    assert len(heads) == 9
    for name, tensor in before.items():
        torch.testing.assert_close(kept[name], tensor, rtol=0, atol=0)
        if name in heads and name.endswith("weight"):  # the biases start at the same class prior every time
            assert not torch.equal(renamed[name], tensor), name
        elif name in heads:
            torch.testing.assert_close(renamed[name], tensor)
        else:
            torch.testing.assert_close(renamed[name], tensor, rtol=0, atol=0)


def test_batches_feed_the_processor_with_augmented_boxes(tmp_path):
    images_dir, annotations = write_detection_folder(str(tmp_path / "scenes"), 4, seed=0, size=48)
    dataset, names = load_coco(images_dir, annotations, "train")
    model = _tiny_detector()
    args = parse_args(["--task", "object-detection", "--variant", "atto", "--image_size", "64", "--output_dir", "x"])
    processor = build_detection_processor(args.model, model)
    data = with_detection_transforms(ImageData(dataset, dataset, names, "x"), None, processor)
    batch = collate_detection([data.validation[0], data.validation[1]])
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    first = dataset[0]["objects"]
    x, y, w, h = first["bbox"][0]
    # Normalized (cx, cy, w, h) of the 48-pixel scene's first box.
    expected = torch.tensor([(x + w / 2) / 48, (y + h / 2) / 48, w / 48, h / 48])
    torch.testing.assert_close(batch["labels"][0]["boxes"][0], expected)
    assert batch["labels"][0]["class_labels"].tolist() == first["category"]


def test_detection_scenes_are_the_segmentation_scenes_with_tight_boxes():
    image, objects = draw_detection_scene(np.random.default_rng(3), 64)
    same, mask, shown = draw_scene(np.random.default_rng(3), 64)
    assert np.array_equal(np.asarray(image), np.asarray(same)) and sorted({s for s, _ in objects}) == shown
    for shape, (x, y, w, h) in objects:
        inside = mask[y : y + h, x : x + w] == SEGMENTATION_LABELS.index(shape)
        # Tight: the shape's pixels reach every edge of its box.
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_transfer_benchmark_scenes_are_coco_folders_of_their_family(tmp_path):
    # benchmarks/detection_transfer.py: every box inside its image, no smaller than the family's smallest object
    # can be drawn, framing pixels that differ from the background around it.
    benchmark = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "detection_transfer.py"))
    for name, family in benchmark["FAMILIES"].items():
        images_dir, annotations = benchmark["write_family"](str(tmp_path / name), family, 4, seed=0)
        coco = json.loads(Path(annotations).read_text())
        assert [category["name"] for category in coco["categories"]] == list(family.shapes)
        assert len(coco["images"]) == 4 and len(coco["annotations"]) >= 4
        for annotation in coco["annotations"]:
            x, y, w, h = annotation["bbox"]
            assert 0 <= x and 0 <= y and x + w <= family.side and y + h <= family.side
            assert min(w, h) >= 0.5 * family.object_side[0] * family.side / 1.25, (name, annotation)
            image = np.asarray(Image.open(Path(images_dir) / f"{annotation['image_id']:05d}.png"), dtype=float)
            inside = image[y : y + h, x : x + w].reshape(-1, 3)
            # The object's colour is at least 80 RGB from the background under it; noise is ±10.
            assert np.linalg.norm(inside - np.median(inside, axis=0), axis=1).max() > 40


def test_detection_layer_decay_follows_the_official_split():
    tiny = ConvNextConfig.from_variant("tiny")
    assert num_layers(tiny, "detection") == 6
    assert num_layers(ConvNextConfig.from_variant("base"), "detection") == 12
    prefix = "model.backbone.model."
    assert layer_id(prefix + "embeddings.patch_embeddings.weight", tiny, "detection") == 0
    assert layer_id(prefix + "encoder.stages.2.layers.8.dwconv.weight", tiny, "detection") == 5
    assert layer_id(prefix + "encoder.stages.3.layers.0.dwconv.weight", tiny, "detection") == 6
    assert layer_id("model.decoder.layers.0.fc1.weight", tiny, "detection") == 7
    defaults = recipe_defaults("paper-detection", "base")
    assert (defaults["layer_decay"], defaults["drop_path_rate"], defaults["learning_rate"]) == (0.8, 0.7, 2e-4)
    assert recipe_defaults("paper-detection", "tiny")["layer_decay"] == 0.7


@pytest.mark.slow
def test_trained_detector_loads_in_the_pipeline_and_evaluate_agrees(tmp_path):
    train = write_detection_folder(str(tmp_path / "train"), 16, seed=0, size=64)
    held_out = write_detection_folder(str(tmp_path / "held_out"), 6, seed=1, size=64)
    model_dir = tmp_path / "model"
    train_main([
        "--task", "object-detection", "--train_dir", train[0], "--train_annotations", train[1],
        "--validation_dir", held_out[0], "--validation_annotations", held_out[1], "--variant", "atto",
        "--config_overrides", json.dumps(TINY), "--image_size", "64", "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--output_dir", str(model_dir),
    ])  # fmt: skip
    for name in ("model.safetensors", "preprocessor_config.json", "README.md", "metrics.json", "predictions.png"):
        assert (model_dir / name).is_file(), name
    report = json.loads((model_dir / "metrics.json").read_text())
    assert set(report["per_class_ap"]) == set(SHAPES)
    assert "object-detection" in (model_dir / "README.md").read_text()
    # COCO's protocol scores every detection, at any score (an untrained detector has none above the pipeline's
    # 0.5). Its scores are near-ties that batching may reorder, so images go one at a time, as the pipeline takes them.
    out = tmp_path / "evaluation"
    evaluated = evaluate_main(["--model", str(model_dir), "--validation_dir", held_out[0], "--validation_annotations",
                               held_out[1], "--output_dir", str(out), "--batch_size", "1"])  # fmt: skip
    detector = pipeline("object-detection", model=str(model_dir), device="cpu")
    scenes, names = load_coco(held_out[0], held_out[1], "held-out")
    detections = pipeline_detections(detector, scenes["image"], scenes["image_id"],
                                     {n: i for i, n in enumerate(names)})  # fmt: skip
    from_pipeline = coco_metrics(coco_ground_truth(scenes, names), detections)
    assert evaluated["num_images"] == 6
    for key in ("map", "map_50", "map_75", "mar_100"):
        assert evaluated[key] == pytest.approx(from_pipeline[key], abs=1e-6), key
    # Three steps do not localize anything yet, so the scores say little: the detections themselves must agree.
    written = json.loads((out / "predictions.json").read_text())

    def rows(found):
        return sorted((d["image_id"], d["category_id"], *d["bbox"], round(d["score"], 4)) for d in found)

    # predictions.json carries the file's category ids (from 1), the pipeline's here are label indices (from 0).
    assert len(detections) == 6 * 10 and rows(written) == rows({**d, "category_id": d["category_id"] + 1}
                                                               for d in detections)  # fmt: skip


def test_evaluate_without_the_annotation_file_names_its_own_flag(tmp_path, capsys):
    from convnext_hf.cli import main as cli_main

    _tiny_detector().save_pretrained(tmp_path / "detector")
    (tmp_path / "images").mkdir()
    argv = ["evaluate", "--model", str(tmp_path / "detector"), "--validation_dir", str(tmp_path / "images"),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert "--validation_dir IMAGES --validation_annotations F.json" in error and "--train_annotations" not in error
    assert not (tmp_path / "out").exists()


def test_demo_command_line_parses_and_trains_a_fixed_number_of_steps():
    settings = DemoSettings(**{**dict(TASKS["object-detection"].demo_defaults), "output_dir": "demo"})
    argv = detection_arguments(settings, ("s/train/images", "s/train/a.json"), ("s/held/images", "s/held/a.json"), "m")
    args = parse_args(argv)
    assert args.model.task == "object-detection" and args.data.train_annotations == "s/train/a.json"
    # 800 scenes × 24 passes / batch 16: the same 1200 steps whatever data the flags are swapped for.
    assert args.training.max_steps == 1200 and args.training.learning_rate == 1e-3
    assert (args.recipe.scale_range, args.recipe.photometric, args.training.weight_decay) == ([1, 1], 0, 1e-4)


@pytest.mark.slow
def test_demo_command_learns_to_detect(tmp_path):
    # The demo's command line, cut to 300 steps (160 scenes, 30 passes): held-out mAP through the pipeline.
    settings = DemoSettings(**{**dict(TASKS["object-detection"].demo_defaults), "train_images": 160, "epochs": 30})
    train = write_detection_folder(str(tmp_path / "train"), 160, seed=0, size=64)
    held_out = write_detection_folder(str(tmp_path / "held_out"), 50, seed=1, size=64)
    train_main(detection_arguments(settings, train, held_out, str(tmp_path / "model")))
    assert detect_held_out(str(tmp_path / "model"), *held_out)["map"] >= MAP_AFTER_300_STEPS


@pytest.mark.slow
def test_detection_demo_runs_end_to_end(tmp_path, capsys):
    summary = demo_main(["--task", "object-detection", "--train_images", "16", "--epochs", "1", "--output_dir",
                         str(tmp_path / "demo")])  # fmt: skip
    printed = capsys.readouterr().out
    assert "convnext-hf train --task object-detection --train_dir" in printed and "--max_steps 1 " in printed
    assert 0.0 <= summary["held_out_map"] <= 1.0
    assert (tmp_path / "demo" / "model" / "predictions.png").is_file()
