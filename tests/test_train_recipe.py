"""Each option of the training recipe on its own: augmentation, Mixup/CutMix, parameter groups, EMA, presets, metric."""

import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification
from convnext_hf.metrics import TOPK_ACCURACY_PATH, load_topk_accuracy
from convnext_hf.train import parse_args
from convnext_hf.train.augment import (
    RAND_AUGMENT_OPS,
    RandAugment,
    RandomResizedCrop,
    TrainTransform,
    random_erasing,
    random_horizontal_flip,
    to_pixel_values,
)
from convnext_hf.train.ema import ModelEma
from convnext_hf.train.mixup import Mixup, cutmix_box, smooth_one_hot, soft_target_cross_entropy
from convnext_hf.train.optim import excluded_from_weight_decay, layer_id, parameter_groups
from convnext_hf.train.recipes import RECIPES, recipe_defaults
from convnext_hf.train.trainer import SavedWeights

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 3, 1], "num_labels": 3}


def textured_image(width: int = 40, height: int = 30) -> Image.Image:
    """An RGB image of seeded noise in [40, 200): any change of geometry, tone, contrast or detail shows."""
    pixels = np.random.default_rng(0).integers(40, 200, size=(height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


# --- random-resized crop and flip -----------------------------------------------------------------------------


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    random.seed(0)
    crop = RandomResizedCrop(16, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    for _ in range(200):
        left, top, right, bottom = crop.crop_box(100, 80)
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80
        area = (right - left) * (bottom - top) / (100 * 80)
        assert 0.24 <= area <= 0.51
        assert 0.49 <= (right - left) / (bottom - top) <= 2.05
    assert crop(textured_image()).size == (16, 16)


def test_random_resized_crop_falls_back_to_central_crop():
    # An area fraction of 1 with aspect ratio 4 never fits a square image: the fallback is the largest central crop
    # at the closest allowed ratio.
    crop = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(4.0, 4.0))
    assert crop.crop_box(40, 40) == (0, 15, 40, 25)


def test_random_resized_crop_with_full_scale_and_unit_ratio_is_a_resize():
    image = textured_image(20, 20)
    crop = RandomResizedCrop(10, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert crop.crop_box(20, 20) == (0, 0, 20, 20)
    np.testing.assert_array_equal(np.array(crop(image)), np.array(image.resize((10, 10), Image.Resampling.BICUBIC)))


def test_random_resized_crop_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop(8, ratio=(0.0, 1.0))


def test_horizontal_flip_mirrors_at_the_given_rate():
    image = textured_image()
    random.seed(1)
    flipped = [np.array(random_horizontal_flip(image, 0.5)) for _ in range(400)]
    mirrored = sum(np.array_equal(pixels, np.array(image)[:, ::-1]) for pixels in flipped)
    assert 160 <= mirrored <= 240
    assert all(np.array_equal(np.array(random_horizontal_flip(image, 0.0)), np.array(image)) for _ in range(20))


# --- RandAugment ------------------------------------------------------------------------------------------------


def test_rand_augment_spec_parsing():
    assert RandAugment.from_string("rand-m9-mstd0.5-inc1") == RandAugment(magnitude=9.0, magnitude_std=0.5)
    assert RandAugment.from_string("rand-m7-n3-p0.8-inc1") == RandAugment(magnitude=7.0, num_ops=3, probability=0.8)
    with pytest.raises(ValueError, match="rand-"):
        RandAugment.from_string("auto-m9")
    with pytest.raises(ValueError, match="inc1"):
        RandAugment.from_string("rand-m9-inc0")
    with pytest.raises(ValueError, match="Unknown RandAugment field"):
        RandAugment.from_string("rand-m9-x3")


@pytest.mark.parametrize("name", sorted(RAND_AUGMENT_OPS))
def test_every_rand_augment_op_changes_the_image_and_keeps_size_and_mode(name):
    image = textured_image()
    random.seed(3)
    changed = RAND_AUGMENT_OPS[name](image, 0.9, (124, 116, 104))
    assert changed.size == image.size and changed.mode == image.mode
    assert not np.array_equal(np.array(changed), np.array(image)), name


def test_rand_augment_changes_images_but_not_shape_or_dtype():
    image = textured_image()
    augment = RandAugment.from_string("rand-m9-mstd0.5-inc1")
    random.seed(0)
    outputs = [augment(image) for _ in range(50)]
    assert all(output.size == image.size and output.mode == "RGB" for output in outputs)
    changed = sum(not np.array_equal(np.array(output), np.array(image)) for output in outputs)
    # Two ops at probability 0.5 each: about 3 images in 4 change.
    assert 25 <= changed <= 48
    grey = augment(image.convert("L"))
    assert grey.mode == "L" and grey.size == image.size


def test_rand_augment_strength_follows_the_magnitude():
    image = textured_image()
    random.seed(0)
    weak = RAND_AUGMENT_OPS["Rotate"](image, 0.1, (0, 0, 0))
    random.seed(0)
    strong = RAND_AUGMENT_OPS["Rotate"](image, 0.9, (0, 0, 0))
    reference = np.array(image, dtype=np.float32)
    assert np.abs(np.array(strong, dtype=np.float32) - reference).mean() > np.abs(
        np.array(weak, dtype=np.float32) - reference
    ).mean()


# --- tensors, random erasing, the whole transform ---------------------------------------------------------------


def test_to_pixel_values_rescales_and_normalizes_like_the_processor():
    image = Image.new("RGB", (4, 3), (255, 0, 51))
    pixels = to_pixel_values(image, 1 / 255, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    assert pixels.shape == (3, 3, 4) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[:, 0, 0], torch.tensor([1.0, -2.0, 0.0]))
    raw = to_pixel_values(image, None, None, None)
    torch.testing.assert_close(raw[:, 1, 2], torch.tensor([255.0, 0.0, 51.0]))


def test_random_erasing_replaces_one_rectangle_with_noise():
    random.seed(0)
    torch.manual_seed(0)
    pixels = torch.zeros(3, 32, 32)
    erased = random_erasing(pixels, probability=1.0)
    assert erased.shape == pixels.shape and erased.dtype == pixels.dtype
    changed = (erased != 0).any(dim=0)
    rows, columns = torch.nonzero(changed, as_tuple=True)
    box = changed[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    assert box.all(), "the erased pixels form one rectangle"
    assert 0.02 * 1024 * 0.8 <= box.numel() <= 1024 / 3 * 1.2
    assert 0.5 < erased[:, changed].std() < 1.5, "per-pixel standard normal noise"
    assert torch.equal(pixels, torch.zeros(3, 32, 32)), "the input is left alone"
    assert random_erasing(pixels, probability=0.0) is pixels


def test_train_transform_output_shape_and_normalization():
    random.seed(0)
    transform = TrainTransform(
        crop=RandomResizedCrop(24),
        hflip=0.5,
        rand_augment=RandAugment(),
        random_erasing=0.0,
        rescale_factor=1 / 255,
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
    )
    pixels = transform(textured_image())
    assert pixels.shape == (3, 24, 24) and pixels.dtype == torch.float32
    assert pixels.min() >= (0 - 0.485) / 0.229 - 1e-5 and pixels.max() <= (1 - 0.406) / 0.225 + 1e-5


# --- Mixup / CutMix and label smoothing -------------------------------------------------------------------------


def test_label_smoothing_targets():
    targets = smooth_one_hot(torch.tensor([2, 0]), num_classes=4, smoothing=0.1)
    torch.testing.assert_close(targets, torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]]))


def test_soft_target_cross_entropy_matches_torch_with_label_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = soft_target_cross_entropy(logits, smooth_one_hot(labels, 5, 0.1))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))


def test_mixup_blends_images_and_targets_in_the_same_proportion():
    torch.manual_seed(0)
    mixup = Mixup(num_classes=3, mixup_alpha=0.8, label_smoothing=0.0)
    pixels = torch.stack([torch.full((1, 4, 4), float(value)) for value in (0.0, 1.0, 10.0)])
    labels = torch.tensor([0, 1, 2])
    mixed, targets = mixup(pixels, labels)
    lam = float(targets[0, 0])
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed[0], torch.full((1, 4, 4), 10.0 * (1 - lam)))
    torch.testing.assert_close(targets[0], torch.tensor([lam, 0.0, 1 - lam]))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(3))


def test_cutmix_pastes_a_box_and_weighs_targets_by_its_area():
    torch.manual_seed(1)
    mixup = Mixup(num_classes=2, cutmix_alpha=1.0, label_smoothing=0.1)
    pixels = torch.stack([torch.zeros(1, 16, 16), torch.ones(1, 16, 16)])
    mixed, targets = mixup(pixels, torch.tensor([0, 1]))
    pasted = float(mixed[0].mean())  # fraction of image 0 now covered by image 1
    assert 0.0 < pasted < 1.0
    assert torch.equal(mixed[0] + mixed[1], torch.ones(1, 16, 16)), "the two images swap the same box"
    smoothed = smooth_one_hot(torch.tensor([0, 1]), 2, 0.1)
    torch.testing.assert_close(targets[0], smoothed[0] * (1 - pasted) + smoothed[1] * pasted)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(2))


def test_cutmix_box_is_clipped_to_the_image():
    torch.manual_seed(0)
    for lam in (0.0, 0.3, 0.9):
        top, bottom, left, right = cutmix_box(10, 20, lam)
        assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 20


def test_mixup_targets_sum_to_one_for_every_mode():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (8,))
    pixels = torch.randn(8, 3, 8, 8)
    for mixup in (
        Mixup(num_classes=10, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1),
        Mixup(num_classes=10, mixup_alpha=0.8, probability=0.5),
        Mixup(num_classes=10, label_smoothing=0.2),
    ):
        for _ in range(10):
            mixed, targets = mixup(pixels, labels)
            assert mixed.shape == pixels.shape and targets.shape == (8, 10)
            torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
            assert (targets >= 0).all()


def test_switch_probability_chooses_between_mixup_and_cutmix():
    torch.manual_seed(0)
    pixels = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    labels = torch.tensor([0, 1])

    def uses_cutmix(mixup):
        mixed, _ = mixup(pixels, labels)
        return bool(((mixed[0] == 0) | (mixed[0] == 1)).all())

    assert all(uses_cutmix(Mixup(num_classes=2, mixup_alpha=1.0, cutmix_alpha=1.0, switch_probability=1.0))
               for _ in range(10))
    assert not any(uses_cutmix(Mixup(num_classes=2, mixup_alpha=1.0, cutmix_alpha=1.0, switch_probability=0.0))
                   for _ in range(10))


def test_mixup_without_alphas_only_smooths():
    pixels = torch.randn(4, 3, 8, 8)
    mixed, targets = Mixup(num_classes=3, label_smoothing=0.3)(pixels, torch.tensor([0, 1, 2, 0]))
    assert mixed is pixels
    torch.testing.assert_close(targets, smooth_one_hot(torch.tensor([0, 1, 2, 0]), 3, 0.3))


def test_mixup_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least 2"):
        Mixup(num_classes=1, mixup_alpha=0.8)
    with pytest.raises(ValueError, match="at least 2"):
        Mixup(num_classes=1, label_smoothing=0.1)
    assert not Mixup(num_classes=1).mixes  # one class (a one-class detector): nothing to mix, nothing refused
    with pytest.raises(ValueError, match="mixup_alpha"):
        Mixup(num_classes=3, mixup_alpha=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        Mixup(num_classes=3, label_smoothing=1.5)


# --- weight decay exclusions and layer-wise learning-rate decay -------------------------------------------------


def test_weight_decay_excludes_norms_biases_and_layer_scale():
    model = ConvNextForImageClassification(ConvNextConfig(**TINY))
    groups = parameter_groups(model, model.config, learning_rate=1e-3, weight_decay=0.05)
    decayed = {name for group in groups if group["weight_decay"] > 0 for name in group["param_names"]}
    excluded = {name for group in groups if group["weight_decay"] == 0 for name in group["param_names"]}
    assert decayed | excluded == {name for name, _ in model.named_parameters()}
    assert all(name.endswith(".weight") and "norm" not in name for name in decayed)
    for name in (
        "convnext.embeddings.layernorm.weight",
        "convnext.encoder.stages.0.layers.0.layernorm.weight",
        "convnext.encoder.stages.1.downsampling_layer.0.weight",  # the LayerNorm of a downsampling layer
        "convnext.encoder.stages.2.layers.1.layer_scale_parameter",
        "convnext.encoder.stages.2.layers.1.pwconv1.bias",
        "convnext.layernorm.weight",
        "classifier.bias",
    ):
        assert name in excluded, name
    for name in (
        "convnext.embeddings.patch_embeddings.weight",
        "convnext.encoder.stages.1.downsampling_layer.1.weight",
        "convnext.encoder.stages.2.layers.1.dwconv.weight",
        "convnext.encoder.stages.2.layers.1.pwconv2.weight",
        "classifier.weight",
    ):
        assert name in decayed, name
    parameters = dict(model.named_parameters())
    assert excluded_from_weight_decay("x.layer_scale_parameter", parameters[
        "convnext.encoder.stages.0.layers.0.layer_scale_parameter"])


def test_group_layer_ids_follow_the_official_twelve_layer_split():
    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[3, 3, 27, 3])

    def lid(name):
        return layer_id(name, config, "group")

    assert lid("convnext.embeddings.patch_embeddings.weight") == 0
    assert lid("convnext.encoder.stages.0.layers.2.dwconv.weight") == 1
    assert lid("convnext.encoder.stages.1.downsampling_layer.1.weight") == 2
    assert lid("convnext.encoder.stages.1.layers.0.dwconv.weight") == 2
    assert lid("convnext.encoder.stages.2.downsampling_layer.0.weight") == 3
    assert [lid(f"convnext.encoder.stages.2.layers.{block}.pwconv1.weight") for block in range(27)] == [
        3 + block // 3 for block in range(27)
    ]
    assert lid("convnext.encoder.stages.3.downsampling_layer.1.bias") == 12
    assert lid("convnext.encoder.stages.3.layers.2.pwconv1.weight") == 12
    assert lid("convnext.layernorm.weight") == 13
    assert lid("classifier.weight") == 13
    # Wrappers' prefixes do not change the answer.
    assert lid("module._orig_mod.convnext.encoder.stages.2.layers.5.dwconv.weight") == 4


def test_single_layer_ids_give_every_block_its_own_layer():
    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 6, 2])
    assert layer_id("convnext.embeddings.layernorm.bias", config, "single") == 1
    assert layer_id("convnext.encoder.stages.0.layers.1.dwconv.weight", config, "single") == 2
    assert layer_id("convnext.encoder.stages.1.downsampling_layer.1.weight", config, "single") == 3
    assert layer_id("convnext.encoder.stages.2.layers.5.dwconv.weight", config, "single") == 10
    assert layer_id("convnext.encoder.stages.3.layers.1.dwconv.weight", config, "single") == 12
    assert layer_id("classifier.weight", config, "single") == 13
    isotropic = ConvNextConfig.from_variant("isotropic-small", depths=[4], hidden_sizes=[16])
    assert layer_id("convnext.encoder.stages.0.layers.3.dwconv.weight", isotropic, "single") == 4
    with pytest.raises(ValueError, match="layer_decay_type single"):
        layer_id("classifier.weight", isotropic, "group")


def test_layer_decay_groups_get_the_right_learning_rates():
    model = ConvNextForImageClassification(ConvNextConfig(**TINY))
    groups = parameter_groups(model, model.config, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.5)
    by_name = {name: group for group in groups for name in group["param_names"]}
    expected = {
        "classifier.weight": 1e-3,  # layer 13
        "convnext.layernorm.weight": 1e-3,
        "convnext.encoder.stages.3.layers.0.dwconv.weight": 1e-3 * 0.5,  # layer 12
        "convnext.encoder.stages.2.layers.2.dwconv.weight": 1e-3 * 0.5**10,  # layer 3 (blocks 0-2 of stage 3)
        "convnext.encoder.stages.1.layers.0.dwconv.weight": 1e-3 * 0.5**11,  # layer 2
        "convnext.encoder.stages.0.layers.0.dwconv.weight": 1e-3 * 0.5**12,  # layer 1
        "convnext.embeddings.patch_embeddings.weight": 1e-3 * 0.5**13,  # layer 0
    }
    for name, lr in expected.items():
        assert math.isclose(by_name[name]["lr"], lr, rel_tol=1e-12), name
    assert groups[0]["lr"] == 1e-3, "the first group carries the base rate the Trainer logs"
    assert by_name["classifier.bias"]["weight_decay"] == 0.0 and by_name["classifier.weight"]["weight_decay"] == 0.05
    flat = parameter_groups(model, model.config, learning_rate=1e-3, weight_decay=0.05)
    assert len(flat) == 2 and all(group["lr"] == 1e-3 for group in flat)
    with pytest.raises(ValueError, match="layer_decay"):
        parameter_groups(model, model.config, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.0)


def test_parameter_groups_skip_frozen_parameters():
    model = ConvNextForImageClassification(ConvNextConfig(**TINY))
    model.convnext.embeddings.requires_grad_(False)
    groups = parameter_groups(model, model.config, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.8)
    names = {name for group in groups for name in group["param_names"]}
    assert not any(name.startswith("convnext.embeddings") for name in names)


# --- EMA ----------------------------------------------------------------------------------------------------------


def test_ema_follows_the_update_rule_and_swaps_in_and_out(tmp_path):
    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(**TINY))
    start = {name: value.clone() for name, value in model.state_dict().items()}
    ema = ModelEma(model, decay=0.75)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)
    name = "classifier.weight"
    torch.testing.assert_close(ema.shadow[name], start[name] + 0.25)
    assert not torch.equal(ema.shadow[name], model.state_dict()[name]), "the EMA differs from the raw weights"
    pixels = torch.randn(2, 3, 32, 32)
    model.eval()
    raw_logits = model(pixels).logits
    with ema.applied_to(model):
        torch.testing.assert_close(model.state_dict()[name], start[name] + 0.25)
        ema_logits = model(pixels).logits
    torch.testing.assert_close(model(pixels).logits, raw_logits)
    assert not torch.allclose(ema_logits, raw_logits)
    ema.save(str(tmp_path))
    restored = ModelEma(model, decay=0.75)
    restored.load(str(tmp_path))
    torch.testing.assert_close(restored.shadow[name], ema.shadow[name])
    with pytest.raises(FileNotFoundError, match="--model_ema"):
        restored.load(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, decay=1.0)


def test_saved_weights_sentence_states_the_choice_both_scores_and_what_remains_of_the_start():
    chosen = SavedWeights("EMA", "eval_mAP", {"live": 0.5, "EMA": 0.75}, decay=0.99, steps=100)
    assert chosen.sentence() == (
        "Saved the EMA weights: eval_mAP 0.7500 against 0.5000 for the live weights (EMA decay 0.99 over 100 steps: "
        "the initial weights still make 36.6% of the average)."
    )
    unvalidated = SavedWeights("EMA", None, {}, decay=0.9999, steps=10)
    assert unvalidated.sentence() == (
        "Saved the EMA weights, not compared with the live weights (no validation images); EMA decay 0.9999 over 10 "
        "steps: the initial weights still make 99.9% of the average."
    )


# --- presets and argument parsing --------------------------------------------------------------------------------


def test_recipe_sets_defaults_and_flags_win():
    args = parse_args(["--recipe", "paper-in1k", "--variant", "tiny", "--output_dir", "out", "--mixup_alpha", "0.2"])
    assert args.recipe.mixup_alpha == 0.2, "a flag beats the preset"
    assert args.recipe.cutmix_alpha == 1.0 and args.recipe.rand_augment == "rand-m9-mstd0.5-inc1"
    assert args.recipe.random_erasing == 0.25 and args.recipe.model_ema and args.recipe.model_ema_decay == 0.9999
    assert args.training.learning_rate == 4e-3 and args.training.weight_decay == 0.05
    assert args.training.label_smoothing_factor == 0.1 and args.training.max_grad_norm == 0.0
    assert math.isclose(args.training.warmup_steps, 20 / 300)
    assert args.training.lr_scheduler_type == "cosine_with_min_lr"
    assert args.model.drop_path_rate == 0.1, "the paper's stochastic depth for ConvNeXt-T"
    finetune = parse_args(["--recipe", "paper-finetune", "--model_name_or_path", "m", "--output_dir", "out"])
    assert finetune.recipe.layer_decay == 0.8 and finetune.model.head_init_scale == 0.001
    assert finetune.training.weight_decay == 1e-8 and finetune.recipe.mixup_alpha == 0.0
    plain = parse_args(["--variant", "atto", "--output_dir", "out"])
    assert plain.recipe.mixup_alpha == 0.0 and plain.recipe.rand_augment is None and not plain.recipe.model_ema
    assert plain.training.eval_strategy == "epoch" and plain.training.logging_steps == 0.02


def test_every_recipe_key_is_an_argument():
    args = parse_args(["--variant", "atto", "--output_dir", "out"])
    fields = {name for group in vars(args).values() if dataclasses.is_dataclass(group) for name in vars(group)}
    for recipe in RECIPES:
        assert set(recipe_defaults(recipe, "tiny")) <= fields, recipe
    with pytest.raises(ValueError, match="Unknown recipe"):
        recipe_defaults("paper-imagenet")


# --- the packaged metric ------------------------------------------------------------------------------------------


def test_topk_accuracy_metric_loads_by_path_and_counts():
    assert TOPK_ACCURACY_PATH.endswith("topk_accuracy.py")
    metric = load_topk_accuracy()
    scores = [[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    # Rows: top-2 hit, top-1 hit, top-2 hit (a tie ranks class 0 then 1), miss.
    assert metric.compute(predictions=scores, references=[2, 0, 1, 0], k=2) == {
        "accuracy": 0.25,
        "top2_accuracy": 0.75,
    }
    # Top-5 only with more than five classes: with five or fewer every example is a hit.
    assert metric.compute(predictions=scores, references=[2, 0, 1, 0]) == {"accuracy": 0.25}
    six_classes = [[0.6, 0.5, 0.4, 0.3, 0.2, 0.1]] * 2
    assert metric.compute(predictions=six_classes, references=[4, 5]) == {"accuracy": 0.0, "top5_accuracy": 0.5}
    # Ties go to the lowest class index, as argmax does.
    assert metric.compute(predictions=[[0.0, 0.0, 0.0]], references=[0])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="class indices"):
        metric.compute(predictions=[[0.1, 0.9]], references=[2])
