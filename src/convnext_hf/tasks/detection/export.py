"""The check of an exported detector: its detections on the check images must be PyTorch's (the export hooks
`check_data` and `check_export`; see `convnext_hf.tasks.ExportForm`).

Raw tensors cannot be held to 1e-5: a detector picks its queries by a top-k over scores, so a float-level difference
can swap near-tied queries, and with them whole rows of `pred_boxes`. Deployment toolchains check detectors by their
detections; so does this, per image:

* detections: the folder's processor (`post_process_object_detection`, no score threshold) on the graph's `logits`
  and `pred_boxes` at the image's size, the 100 highest-scored (COCO's limit), for PyTorch and for the engine;
* matching, in PyTorch's score order: the engine's unmatched detection of the same class with the highest box IoU,
  if that IoU is at least 0.99; the matched scores must agree within 1e-3;
* a detection left without a counterpart passes only at the cut: when its score is within 1e-3 of the other side's
  lowest kept score (a near-tie at the top-k, which either side may keep);
* a detector that picks its queries from the encoder's scores (RT-DETR, RT-DETR v2, D-FINE: a top-k over anchors)
  can meet a tie at that cut: anchors whose scores are equal within 1e-4 (in an undertrained detector, all the
  anchors of a plain background are equal) but only some of which fit. Which of them become queries is the top-k's
  choice, not the model's: PyTorch's own float64 run picks others. PyTorch's detections from such tied queries are
  not required to be matched; the engine may put as many detections of its own in their place. They are counted in
  the report (`detections_from_tied_queries`);
* with `--validation_dir/--validation_annotations` (COCO), also the COCO mAP (pycocotools, every detection kept) of
  both: within 0.002.

The images are the given ones, or 16 generated scenes of shapes at the processor's size. The largest raw difference
of each output (max |engine − PyTorch|) is reported, not required.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image

from ...errors import UserInputError
from ...export.engines import EngineModel
from ...export.graph import Exportable
from ...export.options import ExportOptions
from ...images import read_image
from ...train.shapes import draw_detection_scene
from .data import coco_ground_truth, load_coco
from .metrics import coco_metrics, detections_from_results
from .scoring import PIPELINE_THRESHOLD

IOU_MIN = 0.99
SCORE_TOLERANCE = 1e-3
# Encoder scores (logits) this close are tied at the query selection: well above the engines' float differences.
QUERY_TIE_TOLERANCE = 1e-4
MAP_TOLERANCE = 0.002
# COCO's maxDets: the detections per image its mAP ranks.
MAX_DETECTIONS = 100
GENERATED_IMAGES = 16
SEED = 0
BATCH_SIZE = 8
DEFINITION = (
    f"per image, the {MAX_DETECTIONS} highest-scored post-processed detections (no threshold) of PyTorch and the "
    f"engine, matched in PyTorch's score order to the same class's highest-IoU detection: IoU >= {IOU_MIN}, score "
    f"difference <= {SCORE_TOLERANCE}; unmatched only at the top-k cut (score within {SCORE_TOLERANCE} of the other "
    f"side's lowest); detections from queries tied at the encoder's top-k (scores within {QUERY_TIE_TOLERANCE} of "
    f"its cut, some such anchors left out) not required; with annotations, COCO mAP within {MAP_TOLERANCE}"
)


@dataclass
class CheckImages:
    """What the check runs on: images with their ids, the folder's processor, and, for a COCO set, its boxes as
    scoring reads them (categories 0..n-1 in the data's order) and the data's category of each model label it
    names."""

    images: list[Image.Image]
    image_ids: list[int]
    processor: Any
    source: str
    ground_truth: dict | None = None
    category_ids: dict[int, int] | None = None


def check_data(options: ExportOptions, exportable: Exportable) -> CheckImages:
    """The check images: --validation_dir with --validation_annotations (COCO, read and checked as training reads
    them), else generated scenes at the processor's size."""
    if not (Path(options.model_dir) / "preprocessor_config.json").is_file():
        raise UserInputError(f"{options.model_dir} has no preprocessor_config.json: the detection check runs the "
                             "detector's own image processor; save it beside the model (train does).")  # fmt: skip
    processor = transformers.AutoImageProcessor.from_pretrained(str(options.model_dir))
    size = dict(getattr(processor, "size", None) or {})
    if not processor.do_resize or size.get("height") != size.get("width") or "height" not in size:
        raise UserInputError(
            f"{options.model_dir}'s image processor makes images of size {size} (resize {processor.do_resize}); a "
            "detector's graph takes one fixed size, so export needs a processor that resizes to a square height × "
            "width, as convnext-hf train writes it."
        )
    if (options.validation_dir is None) != (options.validation_annotations is None):
        raise UserInputError(
            "--validation_dir and --validation_annotations go together: the check images and their COCO boxes "
            "(or leave both out to check on generated scenes)."
        )
    if options.validation_dir is None:
        rng = np.random.default_rng(SEED)
        images = [draw_detection_scene(rng, exportable.image_size)[0] for _ in range(GENERATED_IMAGES)]
        return CheckImages(images, list(range(len(images))), processor, f"{len(images)} generated scenes")
    dataset, names = load_coco(str(options.validation_dir), str(options.validation_annotations), "validation")
    category_of_name = {str(name): index for index, name in enumerate(names)}
    id2label = exportable.model.config.id2label
    category_ids = {index: category_of_name[str(name)] for index, name in id2label.items()
                    if str(name) in category_of_name}  # fmt: skip
    if not category_ids:
        raise UserInputError(
            f"--validation_annotations {options.validation_annotations} names none of the detector's labels "
            f"({', '.join(str(name) for name in list(id2label.values())[:5])}...); name its categories as the model "
            "does."
        )
    images = [read_image(image) for image in dataset["image"]]
    return CheckImages(images, [int(i) for i in dataset["image_id"]], processor, str(options.validation_dir),
                       coco_ground_truth(dataset, names), category_ids)  # fmt: skip


def post_process(processor: Any, logits: torch.Tensor, pred_boxes: torch.Tensor,
                 sizes: list[tuple[int, int]]) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The processor's detections at each image's (height, width), no threshold, the best MAX_DETECTIONS by score;
    boxes (x0, y0, x1, y1) in pixels, unrounded, and the query each detection came from."""
    logits = logits.float()
    target_sizes = torch.tensor(sizes, dtype=torch.int64)
    results = processor.post_process_object_detection(
        SimpleNamespace(logits=logits, pred_boxes=pred_boxes.float()), threshold=0.0, target_sizes=target_sizes
    )
    # The processor does not say which query a detection came from; boxes (centre x = query index, no extent) at
    # size 1×1 make it say so: it picks the same detections from the same logits and gathers their boxes.
    queries = torch.zeros_like(pred_boxes, dtype=torch.float32)
    queries[..., 0] = torch.arange(pred_boxes.shape[1], dtype=torch.float32)
    markers = processor.post_process_object_detection(
        SimpleNamespace(logits=logits, pred_boxes=queries), threshold=0.0, target_sizes=torch.ones_like(target_sizes)
    )
    kept = []
    for result, marker in zip(results, markers, strict=True):
        order = torch.argsort(result["scores"], descending=True, stable=True)[:MAX_DETECTIONS]
        detections = {key: result[key][order].double().numpy() for key in ("scores", "labels", "boxes")}
        detections["queries"] = marker["boxes"][order, 0].round().long().numpy()
        kept.append(detections)
    return kept


def tied_queries(outputs: Any) -> list[set[int]]:
    """Per image, the queries whose selection was a tie at the encoder's top-k (see the module docstring); none for a
    detector whose queries are learned rather than selected."""
    anchors, selected = getattr(outputs, "enc_outputs_class", None), getattr(outputs, "enc_topk_logits", None)
    if anchors is None or selected is None:
        return [set() for _ in range(len(outputs.logits))]
    anchor_scores, query_scores = anchors.float().amax(-1), selected.float().amax(-1)
    tied = []
    for anchor, query in zip(anchor_scores, query_scores, strict=True):
        cut = query.min()
        at_cut = (query - cut).abs() <= QUERY_TIE_TOLERANCE
        left_out = int(((anchor - cut).abs() <= QUERY_TIE_TOLERANCE).sum()) > int(at_cut.sum())
        tied.append(set(torch.nonzero(at_cut).flatten().tolist()) if left_out else set())
    return tied


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each of `boxes` (identical empty boxes count as IoU 1)."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)

    def area(corners: np.ndarray) -> np.ndarray:
        return np.prod(np.clip(corners[..., 2:] - corners[..., :2], 0, None), axis=-1)

    union = area(box) + area(boxes) - intersection
    same = np.all(boxes == box, axis=1).astype(np.float64)
    return np.divide(intersection, union, out=same, where=union > 0)


@dataclass
class Matching:
    """One image's detections matched: (PyTorch index, engine index, IoU) pairs, and the unmatched of each side."""

    pairs: list[tuple[int, int, float]]
    reference_left: list[int]
    engine_left: list[int]
    # The best IoU each unmatched PyTorch detection found among the engine's unmatched detections of its class.
    closest_iou: dict[int, float]


def match_detections(reference: dict[str, np.ndarray], engine: dict[str, np.ndarray]) -> Matching:
    """Match PyTorch's detections, in score order, to the engine's unmatched detection of the same class with the
    highest IoU, when it reaches IOU_MIN."""
    taken = np.zeros(len(engine["scores"]), dtype=bool)
    pairs, left, closest = [], [], {}
    for index in np.argsort(-reference["scores"], kind="stable"):
        candidates = np.flatnonzero(~taken & (engine["labels"] == reference["labels"][index]))
        ious = box_iou(reference["boxes"][index], engine["boxes"][candidates])
        best = int(np.argmax(ious)) if candidates.size else -1
        if best >= 0 and ious[best] >= IOU_MIN:
            taken[candidates[best]] = True
            pairs.append((int(index), int(candidates[best]), float(ious[best])))
        else:
            left.append(int(index))
            closest[int(index)] = float(ious[best]) if best >= 0 else 0.0
    return Matching(pairs, left, [int(index) for index in np.flatnonzero(~taken)], closest)


def compare_detections(reference: list[dict[str, np.ndarray]], engine: list[dict[str, np.ndarray]],
                       tied: list[set[int]] | None = None) -> dict:  # fmt: skip
    """The matching's numbers over all images, and the failures (empty when the engine's detections are PyTorch's);
    `tied` holds each image's queries tied at the encoder's top-k, whose detections need no counterpart."""
    ious, score_differences, at_cut, missing, extra = [], [], 0, [], []
    from_ties = replaced = 0
    for image, (ours, theirs) in enumerate(zip(reference, engine, strict=True)):
        matching = match_detections(ours, theirs)
        ious += [iou for _, _, iou in matching.pairs]
        score_differences += [abs(ours["scores"][i] - theirs["scores"][j]) for i, j, _ in matching.pairs]
        ties = tied[image] if tied else set()
        from_ties += sum(int(query) in ties for query in ours["queries"])
        # The engine may fill the places of PyTorch's unmatched tied detections with its own picks.
        free = sum(int(ours["queries"][index]) in ties for index in matching.reference_left)
        replaced += min(free, len(matching.engine_left))
        # Per side: its unmatched, where their failures go, the queries excused, the places it may fill.
        for side, other, left, failed, excused, spare in ((ours, theirs, matching.reference_left, missing, ties, 0),
                                                          (theirs, ours, matching.engine_left, extra, set(), free)):
            cut = other["scores"].min() if other["scores"].size else -np.inf
            for index in left:
                if int(side["queries"][index]) in excused:
                    continue
                if side["scores"][index] <= cut + SCORE_TOLERANCE:
                    at_cut += 1
                elif spare:
                    spare -= 1
                else:
                    failed.append((float(side["scores"][index]), matching.closest_iou.get(index)))
    numbers = {
        "pytorch_detections": sum(len(result["scores"]) for result in reference),
        "matched": len(ious),
        "unmatched_at_the_cut": at_cut,
        "detections_from_tied_queries": from_ties,
        "replaced_tied_detections": replaced,
        "min_iou": min(ious, default=None),
        "max_score_difference": max(score_differences, default=None),
        f"pytorch_scores_above_{PIPELINE_THRESHOLD}": int(sum((r["scores"] > PIPELINE_THRESHOLD).sum()
                                                              for r in reference)),  # fmt: skip
        "max_pytorch_score": max((float(r["scores"].max()) for r in reference if r["scores"].size), default=None),
    }
    failures = []
    if missing:
        closest = max(iou for _, iou in missing)
        failures.append(
            f"{len(missing)} of {numbers['pytorch_detections']} PyTorch detections (scores up to "
            f"{max(score for score, _ in missing):.3f}) have no exported detection of their class with IoU >= "
            f"{IOU_MIN} (the closest: IoU {closest:.3f})"
        )
    if extra:
        failures.append(f"{len(extra)} exported detections (scores up to {max(s for s, _ in extra):.3f}) are not "
                        "PyTorch's")  # fmt: skip
    if score_differences and numbers["max_score_difference"] > SCORE_TOLERANCE:
        failures.append(f"matched scores differ by up to {numbers['max_score_difference']:.2e} > {SCORE_TOLERANCE}")
    return {**numbers, "failures": failures}


def coco_map(check: CheckImages, results: list[dict[str, np.ndarray]]) -> float:
    """COCO mAP of the detections on the check's boxes, scored as `convnext-hf evaluate` scores them: box corners
    truncated to whole pixels as the pipeline gives them, the model's labels the data lacks left out."""
    kept = []
    for result in results:
        known = np.isin(result["labels"], list(check.category_ids))
        kept.append({"scores": result["scores"][known], "labels": result["labels"][known].astype(int),
                     "boxes": np.trunc(result["boxes"][known])})  # fmt: skip
    detections = detections_from_results(check.image_ids, kept, check.category_ids)
    return coco_metrics(check.ground_truth, detections)["map"]


@torch.inference_mode()
def check_export(exportable: Exportable, engine_model: EngineModel, check: CheckImages) -> dict:
    """Detections of PyTorch and the engine on the check images, compared (see the module docstring); the report's
    `parity`, whose `failures` name what disagrees."""
    model = exportable.model.eval()
    reference, engine, tied, raw = [], [], [], dict.fromkeys(exportable.output_names, 0.0)
    for start in range(0, len(check.images), BATCH_SIZE):
        images = check.images[start : start + BATCH_SIZE]
        pixel_values = check.processor(images=images, return_tensors="pt")["pixel_values"].float()
        outputs = model(pixel_values=pixel_values)
        ours = [outputs[name] for name in exportable.output_names]
        tied += tied_queries(outputs)
        try:
            theirs = [torch.from_numpy(array) for array in engine_model(pixel_values.numpy())]
        except Exception as error:  # an engine that fails on the check images fails the check; say how
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return {"failures": [f"the engine failed on a batch of {len(images)} check images ({reason})"]}
        for name, tensor, array in zip(exportable.output_names, ours, theirs, strict=True):
            raw[name] = max(raw[name], float((tensor - array).abs().max()))
        sizes = [(image.height, image.width) for image in images]
        reference += post_process(check.processor, *ours, sizes)
        engine += post_process(check.processor, *theirs, sizes)
    result = {"definition": DEFINITION, "images": len(check.images), "check_images": check.source,
              **compare_detections(reference, engine, tied), "raw_max_abs_difference": raw}  # fmt: skip
    if check.ground_truth is not None:
        ours, theirs = (coco_map(check, results) for results in (reference, engine))
        result["map"] = {"pytorch": ours, "exported": theirs, "difference": abs(ours - theirs)}
        if not abs(ours - theirs) <= MAP_TOLERANCE:
            result["failures"].append(f"COCO mAP {theirs:.4f} against PyTorch's {ours:.4f} (difference "
                                      f"{abs(ours - theirs):.4f} > {MAP_TOLERANCE})")  # fmt: skip
    result["summary"] = _summary(result)
    return result


def _summary(result: dict) -> str:
    """The check's numbers in one line, for the command's output."""
    iou, score = result["min_iou"], result["max_score_difference"]
    summary = (f"detections on {result['check_images']}: {result['matched']} matched, IoU >= "
               f"{'n/a' if iou is None else format(iou, '.6f')}, scores within "
               f"{'n/a' if score is None else format(score, '.1e')}")  # fmt: skip
    if result["detections_from_tied_queries"]:
        summary += (f" ({result['detections_from_tied_queries']} of {result['pytorch_detections']} from queries "
                    "tied at the encoder's top-k, not required)")  # fmt: skip
    if "map" in result:
        summary += f", mAP {result['map']['exported']:.4f} (PyTorch {result['map']['pytorch']:.4f})"
    return summary + f"; raw max |difference| {max(result['raw_max_abs_difference'].values()):.1e}"
