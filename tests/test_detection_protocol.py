"""Detection under COCO's protocol, and the loop a detector folder goes through.

Every detection number (the Trainer's evaluation, the run's final evaluation and metrics.json, `convnext-hf
evaluate`) must equal pycocotools and faster-coco-eval run directly on the same detections and the annotation file:
every detection up to 100 per image, no score threshold, crowd boxes as ignore regions. The validation boxes are made
from a trained folder's own detections (moved a little), so that its mAP is far from 0 and from 1 and every part of
the protocol moves it. Then the folder that `train` wrote fine-tunes (same and new classes), resumes, evaluates and
pushes, and every next command its results box prints runs as printed.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from convnext_hf.evaluation_command import main as evaluate_main
from convnext_hf.tasks.detection.metrics import coco_metrics
from convnext_hf.tasks.detection.model import class_head_names
from convnext_hf.train import main as train_main
from convnext_hf.train.card import TaskCard
from convnext_hf.train.shapes import SHAPES, write_detection_folder

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_queries": 10, "num_denoising": 5}
# Category ids of the crafted validation file: not 0..n-1, so that predictions.json must carry the file's ids.
CATEGORY_IDS = (2, 5, 9)
EVAL_BATCH = 4  # six validation images: a last batch of two, whose targets must keep every box


def _train_argv(train, validation, output, *extra):
    return [
        "--task", "object-detection", "--train_dir", train[0], "--train_annotations", train[1],
        *(["--validation_dir", validation[0], "--validation_annotations", validation[1]] if validation else []),
        "--image_size", "64", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", str(EVAL_BATCH),
        "--report_to", "none", "--output_dir", str(output), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    return root, write_detection_folder(str(root / "train"), 12, seed=0, size=64), \
        write_detection_folder(str(root / "val"), 6, seed=1, size=64)  # fmt: skip


@pytest.fixture(scope="module")
def detector_folder(scenes):
    """A folder `train --task object-detection` wrote (a few steps from scratch), with a checkpoint."""
    root, train, validation = scenes
    train_main(_train_argv(train, validation, root / "first", "--variant", "atto", "--config_overrides",
                           json.dumps(TINY), "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "1",
                           "--learning_rate", "1e-3"))  # fmt: skip
    return root / "first"


def _crafted_validation(folder: Path, images_dir: str, path: Path, crowd: bool) -> Path:
    """A COCO file of the validation images whose boxes are the folder's own detections of ranks 1 and 9 (of 10),
    moved by a pixel; with `crowd`, a crowd box over the rank-2 detection of each even image. The last image has no
    box."""
    detector = pipeline("object-detection", model=str(folder), device="cpu")
    names = sorted(os.listdir(images_dir))
    images, annotations = [], []
    for index, name in enumerate(names):
        image = Image.open(os.path.join(images_dir, name))
        images.append({"id": 100 + index, "file_name": name, "width": image.width, "height": image.height})
        found = detector(image, threshold=0.0) if index < len(names) - 1 else []
        ranks = [(0, 0), (8, 0)] + ([(1, 1)] if crowd and index % 2 == 0 else [])
        for rank, is_crowd in ranks:
            if rank >= len(found):
                continue
            box = found[rank]["box"]
            x0, y0 = max(box["xmin"] + 1, 0), max(box["ymin"] - 1, 0)
            x1, y1 = min(box["xmax"] + 1, image.width), min(box["ymax"], image.height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            bbox = [x0, y0, x1 - x0, y1 - y0]
            annotations.append({
                "id": len(annotations) + 1, "image_id": 100 + index, "bbox": bbox, "iscrowd": is_crowd,
                "category_id": CATEGORY_IDS[SHAPES.index(found[rank]["label"])],
                # COCO areas are the object's, not its box's: what the small/medium/large split must read.
                "area": round(0.7 * bbox[2] * bbox[3], 2),
            })  # fmt: skip
    categories = [{"id": category, "name": name} for category, name in zip(CATEGORY_IDS, SHAPES, strict=True)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _pycocotools(annotations: Path, detections: list[dict]) -> np.ndarray:
    """pycocotools' summary, run as its documentation does: COCO(file), loadRes, evaluate, accumulate, summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotations))
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def _faster_coco_eval(annotations: Path, detections: list[dict]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotations))
        evaluation = COCOeval_faster(truth, truth.loadRes(detections), "bbox", print_function=lambda *args: None)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return np.asarray(evaluation.stats)


def _pipeline_detections(folder: Path, images_dir: str, annotations: Path) -> list[dict]:
    """The detections a user gets from pipeline("object-detection") at threshold 0, cut to COCO's 100 per image,
    in COCO's results format with the file's ids: written here, without this package's scoring code."""
    coco = json.loads(annotations.read_text())
    category = {entry["name"]: entry["id"] for entry in coco["categories"]}
    detector = pipeline("object-detection", model=str(folder), device="cpu")
    detections = []
    for image in coco["images"]:
        found = detector(os.path.join(images_dir, image["file_name"]), threshold=0.0)
        for item in sorted(found, key=lambda item: -item["score"])[:100]:
            box = item["box"]
            detections.append({
                "image_id": image["id"], "category_id": category[item["label"]], "score": item["score"],
                "bbox": [box["xmin"], box["ymin"], box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]],
            })  # fmt: skip
    return detections


@pytest.mark.slow
@pytest.mark.parametrize("crowd", [False, True], ids=["plain", "crowd"])
def test_every_reported_map_is_pycocotools_on_the_same_detections(scenes, detector_folder, tmp_path, crowd):
    root, train, validation = scenes
    annotations = _crafted_validation(detector_folder, validation[0], tmp_path / "val.json", crowd)
    crafted = (validation[0], str(annotations))
    # Fine-tuning the folder at learning rate 1e-12 keeps its weights (the encoder's batch norms move a little), so the
    # crafted boxes stay near its detections; evaluated by the Trainer after its one step, and at the end.
    model = tmp_path / "model"
    train_main(_train_argv(train, crafted, model, "--model", str(detector_folder), "--learning_rate", "1e-12",
                           "--max_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1",
                           "--save_strategy", "no"))  # fmt: skip
    report = json.loads((model / "metrics.json").read_text())
    state = json.loads((model / "trainer_state.json").read_text())
    trainer_eval = next(entry for entry in state["log_history"] if "eval_map" in entry)
    evaluated = evaluate_main(["--model", str(model), "--validation_dir", crafted[0], "--validation_annotations",
                               crafted[1], "--output_dir", str(tmp_path / "scores"),
                               "--batch_size", str(EVAL_BATCH)])  # fmt: skip
    written = json.loads((tmp_path / "scores" / "predictions.json").read_text())
    independent = _pipeline_detections(model, crafted[0], annotations)

    reference = _pycocotools(annotations, written)
    assert 0.02 < reference[0] < 0.95, "a mAP that every part of the protocol moves"
    np.testing.assert_allclose(_pycocotools(annotations, independent), reference, atol=1e-6)
    np.testing.assert_allclose(_faster_coco_eval(annotations, written), reference, atol=1e-6)
    keys = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
    for index, key in enumerate(keys):
        assert evaluated[key] == pytest.approx(reference[index], abs=1e-6), key
        assert report["metrics"][f"eval_{key}"] == pytest.approx(reference[index], abs=1e-6), key
        assert trainer_eval[f"eval_{key}"] == pytest.approx(reference[index], abs=1e-6), key
    # 10 queries × 3 classes: RT-DETR's post-processing gives its 10 best (query, class) pairs per image.
    assert len(written) == 6 * 10 and {found["category_id"] for found in written} <= set(CATEGORY_IDS)
    assert evaluated["num_crowd_boxes"] == (3 if crowd else 0)
    # The threshold chooses what is shown (predictions.csv, predictions.png), not what is scored; scoring only the
    # detections above it, as before, gives a lower mAP.
    threshold = float(np.median([found["score"] for found in written]))
    again = evaluate_main(["--model", str(model), "--validation_dir", crafted[0], "--validation_annotations",
                           crafted[1], "--output_dir", str(tmp_path / "shown"), "--batch_size", str(EVAL_BATCH),
                           "--threshold", str(threshold)])  # fmt: skip
    assert again["map"] == pytest.approx(evaluated["map"], abs=1e-9) and again["shown_score_threshold"] == threshold
    shown = [found for found in written if found["score"] > threshold]
    rows = (tmp_path / "shown" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(shown) and 0 < len(shown) < len(written)
    assert _pycocotools(annotations, shown)[0] < reference[0] - 0.01
    if crowd:
        # The crowd boxes are ignore regions: scored as plain boxes, the same detections give another mAP.
        plain = json.loads(annotations.read_text())
        plain["annotations"] = [{**entry, "iscrowd": 0} for entry in plain["annotations"]]
        (tmp_path / "plain.json").write_text(json.dumps(plain))
        assert abs(_pycocotools(tmp_path / "plain.json", written)[0] - reference[0]) > 1e-3


def _next_commands(printed: str) -> list[str]:
    """The commands under `next:` in the results box (its rows are `│ text │`)."""
    box = printed[printed.rindex("┌") : printed.rindex("┘")].splitlines()
    rows = [line[2:-2].rstrip() for line in box if line.startswith("│")]
    return [row.strip() for row in rows[rows.index("next:") + 1 :]]


@pytest.mark.slow
def test_a_detector_folder_fine_tunes_resumes_evaluates_pushes_and_its_next_commands_run(
    scenes, detector_folder, tmp_path, capsys, monkeypatch, caplog
):
    root, train, validation = scenes
    # Resumes from the checkpoint its run kept (in a copy: the folder serves the other tests).
    checkpoints = sorted(path.name for path in detector_folder.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]
    shutil.copytree(detector_folder, tmp_path / "resumed")
    train_main(_train_argv(train, validation, tmp_path / "resumed", "--variant", "atto", "--config_overrides",
                           json.dumps(TINY), "--max_steps", "3", "--resume_from_checkpoint", "last"))  # fmt: skip
    # Every tensor came back, those saved under RT-DETR's former names (`fc1` for `mlp.fc1`) too.
    assert "missing keys in the checkpoint" not in caplog.text and "unexpected keys" not in caplog.text
    assert json.loads((tmp_path / "resumed" / "trainer_state.json").read_text())["global_step"] == 3

    # Same classes: fine-tunes from the folder and pushes it (to a Hub that records the upload: no network in
    # tests), and the results box's next commands run as printed.
    import huggingface_hub

    uploads = []

    class RecordingHub:
        def create_repo(self, repo_id, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append((repo_id, sorted(os.listdir(folder_path)), kwargs.get("ignore_patterns")))

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_not_a_real_token")
    monkeypatch.setattr("transformers.trainer.hf_api", RecordingHub)
    capsys.readouterr()
    model = tmp_path / "same"
    train_main(_train_argv(train, validation, model, "--model", str(detector_folder), "--max_steps", "1",
                           "--save_strategy", "no", "--push_to_hub", "--hub_model_id", "me/detector"))  # fmt: skip
    # The run's push (the Trainer may push before it too): the finished folder, card and metrics included.
    repo, files, _ = uploads[-1]
    assert repo == "me/detector"
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} <= set(files)
    commands = _next_commands(capsys.readouterr().out)
    assert len(commands) == 3, commands
    assert commands[0].startswith(f"convnext-hf evaluate --model {model} --validation_dir {validation[0]} "
                                  f"--validation_annotations {validation[1]} ")  # fmt: skip
    # The task record's export form: detectors export, checked by their detections.
    assert commands[1] == f"convnext-hf export onnx --model {model} --output_dir {model}-onnx"
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, env=environment, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert json.loads((tmp_path / "same-evaluation" / "metrics.json").read_text())["num_images"] == 6
    # This detector (3 steps from scratch) ties at its encoder's query selection; the check still matches the rest.
    parity = json.loads((tmp_path / "same-onnx" / "export_report.json").read_text())["parity"]
    assert parity["matched"] > 0 and parity["min_iou"] >= 0.99 and parity["max_score_difference"] <= 1e-3

    # New classes (two of the three): new class heads, the rest kept.
    coco = json.loads(Path(train[1]).read_text())
    coco["categories"] = coco["categories"][:2]
    coco["annotations"] = [entry for entry in coco["annotations"] if entry["category_id"] <= 2]
    (root / "two.json").write_text(json.dumps(coco))
    two = tmp_path / "two"
    train_main(_train_argv((train[0], str(root / "two.json")), None, two, "--model", str(detector_folder),
                           "--max_steps", "1", "--save_strategy", "no", "--learning_rate", "1e-12"))  # fmt: skip
    config = json.loads((two / "config.json").read_text())
    assert config["id2label"] == {"0": "circle", "1": "square"}
    from safetensors.torch import load_file

    before, after = load_file(detector_folder / "model.safetensors"), load_file(two / "model.safetensors")
    heads = [name for name in before if before[name].shape != after[name].shape]
    assert heads and all("class_embed" in name or "score_head" in name for name in heads), heads
    stem = next(name for name in before if "patch_embeddings.weight" in name)
    # Kept from the folder (one step at learning rate 1e-12 may move a weight by its last bit), not made anew.
    np.testing.assert_allclose(before[stem].numpy(), after[stem].numpy(), rtol=0, atol=1e-9)


def test_renamed_classes_of_the_same_number_get_fresh_class_heads():
    from convnext_hf import ConvNextConfig
    from convnext_hf.tasks.detection.model import new_detector

    model = new_detector("rt_detr", ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]),
                         ["a", "b", "c"], {"num_queries": 10, "num_denoising": 5})  # fmt: skip
    # RT-DETR's classifiers: the denoising class embedding, the encoder's query scores, one per decoder layer.
    layers = [f"model.decoder.class_embed.{layer}.{kind}" for layer in range(3) for kind in ("weight", "bias")]
    assert class_head_names(type(model), model.config) == [
        "model.denoising_class_embed.weight", "model.enc_score_head.weight", "model.enc_score_head.bias", *layers,
    ]  # fmt: skip


def test_not_measured_reads_n_a_in_the_card_and_the_metrics():
    card = TaskCard(what="", results=(), pictures="", usage=str, not_measured=-1.0)
    assert [card.measured(value) for value in (0.5, 0.0, -1.0, None, float("nan"))] == [True, True, False, False,
                                                                                         False]  # fmt: skip
    truth = {
        "images": [{"id": 1, "width": 50, "height": 50}, {"id": 2, "width": 50, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            # Crowd only: the class has nothing to measure, and a detection inside the crowd is not a false one.
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 1},
        ],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "fox"}],
    }
    detections = [{"image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.4},
                  {"image_id": 2, "category_id": 0, "bbox": [0, 0, 20, 20], "score": 0.9},
                  {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}]  # fmt: skip
    scores = coco_metrics(truth, detections)
    # The cat's false detection outscores its true one: precision 1/2 at recall 1 at every IoU threshold.
    assert scores["map"] == pytest.approx(0.5) and scores["per_class_ap"] == {"cat": pytest.approx(0.5),
                                                                              "dog": None, "fox": None}
    assert scores["map_medium"] == -1.0 and scores["map_large"] == -1.0
    crowd_only = {**truth, "annotations": truth["annotations"][1:]}
    assert coco_metrics(crowd_only, detections)["map"] == -1.0
    assert coco_metrics(truth, [])["map"] == 0.0


def _edited(annotations: str, path: Path, edit) -> str:
    coco = json.loads(Path(annotations).read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    return str(path)


def _without_triangles_with_an_empty_and_a_crowd_only_image(coco):
    coco["annotations"] = [entry for entry in coco["annotations"] if entry["category_id"] != 3]
    first, second = coco["images"][0]["id"], coco["images"][1]["id"]
    coco["annotations"] = [{**entry, "iscrowd": 1} if entry["image_id"] == second else entry
                           for entry in coco["annotations"] if entry["image_id"] != first]  # fmt: skip


def _crowd_only(coco):
    coco["annotations"] = [{**entry, "iscrowd": 1} for entry in coco["annotations"]]


def _one_class(coco):
    coco["categories"] = coco["categories"][:1]
    coco["annotations"] = [entry for entry in coco["annotations"] if entry["category_id"] == 1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "edit_validation", "edit_both", "not_measured"),
    [
        ("absent class, empty and crowd-only images", _without_triangles_with_an_empty_and_a_crowd_only_image, None,
         {"per_class_ap.triangle"}),
        ("crowd-only validation", _crowd_only, None,
         {"map", "map_50", "map_75", "mar_1", "mar_10", "mar_100", *(f"per_class_ap.{name}" for name in SHAPES)}),
        ("one class", None, _one_class, set()),
    ],
)  # fmt: skip
def test_valid_data_ends_with_a_card_that_says_what_was_measured(scenes, tmp_path, case, edit_validation, edit_both,
                                                                 not_measured):  # fmt: skip
    root, train, validation = scenes
    train_file, validation_file = train[1], validation[1]
    if edit_both is not None:
        train_file = _edited(train[1], tmp_path / "train.json", edit_both)
        validation_file = _edited(validation[1], tmp_path / "val.json", edit_both)
    if edit_validation is not None:
        validation_file = _edited(validation[1], tmp_path / "val.json", edit_validation)
    model = tmp_path / "model"
    train_main(_train_argv((train[0], train_file), (validation[0], validation_file), model, "--variant", "atto",
                           "--config_overrides", json.dumps(TINY), "--max_steps", "2", "--eval_strategy", "steps",
                           "--eval_steps", "2", "--save_strategy", "no"))  # fmt: skip
    for name in ("README.md", "metrics.json", "predictions.png", "training_curves.png", "model.safetensors"):
        assert (model / name).is_file(), (case, name)
    report = json.loads((model / "metrics.json").read_text())
    missing = set(report["not_measured"])
    # Sizes with no box are not measured either; the rest must be exactly what the case leaves nothing to measure in.
    assert {key for key in missing if not key.endswith(("small", "medium", "large"))} == not_measured, case
    for key in missing:
        if key.startswith("per_class_ap."):
            assert report["per_class_ap"][key.split(".", 1)[1]] is None
        else:
            assert report["metrics"][f"eval_{key}"] == -1.0
    card = (model / "README.md").read_text()
    labels = json.loads((model / "config.json").read_text())["id2label"]
    for name in labels.values():
        value = report["per_class_ap"][name]
        assert f"| {name} | {'n/a' if value is None else f'{value:.2%}'} |" in card, (case, name)
    if "map" in not_measured:
        assert "| COCO mAP@[.5:.95] | n/a |" in card and "value: -1" not in card
    assert "COCO's protocol" in card and "-100.00%" not in card


def test_results_box_of_a_detector_prints_its_own_commands_and_n_a():
    from convnext_hf.train.summary import RunSummary, summary_lines

    summary = RunSummary(
        "/runs/det", "object-detection", "object-detection", 3, {"eval_map": 0.25, "eval_map_large": -1.0},
        "the live weights", validation="val", validation_images=6,
        evaluate_source=["--validation_dir", "val", "--validation_annotations", "val.json"], remote_code=False,
        exportable=False, example_image="val/00000.png", not_measured=-1.0,
    )  # fmt: skip
    lines = summary_lines(summary)
    assert "final weights    : map 0.25, map_large n/a" in lines
    assert lines[lines.index("next:") + 1 :] == [
        "  convnext-hf evaluate --model /runs/det --validation_dir val --validation_annotations val.json "
        "--output_dir /runs/det-evaluation",
        "  python -c \"from transformers import pipeline; print(pipeline('object-detection', model='/runs/det')"
        "('val/00000.png'))\"",
    ]
