"""A saved model folder the user names (`--model`, `load_backbone_weights`, a resume checkpoint): the one gate.

Every command and API that reads a saved folder goes through `check_saved_folder` (files) and `load_model_folder`
(the model), which check what the converter checks of a checkpoint folder: config.json a JSON object; weights in
safetensors only (`model.safetensors`, or exactly the shards its index names, inside the folder: a pickle is refused
by name and never loaded, a weight file the index does not name is refused rather than merged); each file intact
(headers, sizes); the weights fitting the config (names, shapes, dtypes; the class heads the size of id2label); and
every weight finite. Each refusal is one line naming the folder, the file or key, and the fix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from .conversion.checkpoint_io import INDEX_NAME, check_index, read_json, shard_names
from .errors import UserInputError, one_line
from .finite import refuse_non_finite

logger = logging.getLogger(__name__)

WRITERS = "a folder written by save_pretrained, `convnext-hf convert` or `convnext-hf train`"
# The logger of transformers' loading report, which our refusal of a folder whose weights do not fit replaces.
LOADING_REPORT_LOGGER = "transformers.modeling_utils"
NAMED_KEYS = 3  # weights named in a refusal per kind; the rest are counted
SAFE_WEIGHTS_NAME = "model.safetensors"
PROCESSOR_NAME = "preprocessor_config.json"
# Files of pickled weights (torch.save and the like): named in a refusal, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# safetensors dtypes of floating-point tensors: a model's float weight stored as another dtype is refused.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ")


def check_model_folder(path: str | os.PathLike, flag: str = "--model", hub_ids: bool = True) -> None:
    """Refuse a path that cannot hold a saved model: a file, a folder without config.json, or (when `hub_ids`
    allows a name like `org/model`, only for paths that look local) a folder that does not exist."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserInputError(f"{flag} {path} is not a model folder (it has no config.json); pass {WRITERS}.")
        return
    if os.path.exists(path):
        raise UserInputError(f"{flag} {path} is a file; pass {WRITERS}.")
    # `owner/name` is a Hub id; a second slash, or Windows' separator, only a path has.
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or (
        os.sep != "/" and os.sep in path
    )
    if not hub_ids or looks_local:
        raise UserInputError(f"{flag} {path} does not exist; pass {WRITERS}.")


@contextmanager
def loading_model(path: str | os.PathLike, flag: str = "--model") -> Iterator[None]:
    """Within the block, the loaders' errors for an unreadable model (a config that is not JSON or names no model
    type, missing or damaged weights) become one `UserInputError` naming the folder."""
    try:
        yield
    except UserInputError:
        raise
    except (OSError, ValueError, SafetensorError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(f"{flag} {os.fspath(path)} cannot be loaded as a model: {reason} Pass {WRITERS}.") \
            from error


@dataclass(frozen=True)
class FolderWeights:
    """The safetensors files a saved folder's model loads from, and the dtype of each tensor they hold."""

    files: list[Path]
    dtypes: dict[str, str]


def _refuse(flag: str, folder: Path, problem: str, fix: str) -> UserInputError:
    return UserInputError(f"{flag} {folder}: {problem}; {fix}.")


def folder_weights(folder: Path, flag: str = "--model") -> FolderWeights:
    """The weight files of a saved folder (`model.safetensors`, or the shards its index names), checked as the
    converter checks a checkpoint folder: safetensors only, the index's shards present and no others, headers
    intact, the index naming exactly the tensors its shards hold."""
    single, index = folder / SAFE_WEIGHTS_NAME, folder / INDEX_NAME
    if index.is_file():
        if single.is_file():
            raise _refuse(flag, folder, f"it holds both {SAFE_WEIGHTS_NAME} and {INDEX_NAME}, two sets of weights",
                          "remove the one left from an earlier save")  # fmt: skip
        try:
            shards, weight_map = shard_names(index)
        except UserInputError as error:
            raise UserInputError(f"{flag} {folder}: {error}") from None
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise _refuse(flag, folder, f"{INDEX_NAME} names shard(s) that are not there: {_names(missing)}",
                          "copy the whole folder")  # fmt: skip
        stale = sorted(path.name for path in folder.glob("model*.safetensors") if path.name not in shards)
        if stale:
            problem = f"{_names(stale)} is not among the shards {INDEX_NAME} names (left from an earlier save?)"
            raise _refuse(flag, folder, problem, "remove it, or restore the index it belongs to")
        files = [folder / shard for shard in shards]
    elif single.is_file():
        files, weight_map = [single], None
    else:
        pickles = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise _refuse(flag, folder, f"its weights are in {_names(pickles)}, a pickle, which is not loaded "
                          "(unpickling can run code)", f"convert it to safetensors first: convnext-hf convert "
                          f"--checkpoint {folder} --output_dir NEW_FOLDER")  # fmt: skip
        raise _refuse(flag, folder, f"it has no {SAFE_WEIGHTS_NAME} (nor {INDEX_NAME})", f"pass {WRITERS}")
    dtypes: dict[str, str] = {}
    parts = []
    for file in files:
        try:
            with safe_open(file, "pt") as weights:
                held = {name: weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for every kind of damage
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            problem = f"{file.name} is not a readable safetensors file, truncated or damaged ({reason})"
            raise _refuse(flag, folder, problem, "copy or save the folder again") from None
        dtypes.update(held)
        parts.append((file.name, held))
    if weight_map is not None:
        try:
            check_index(index, weight_map, parts)
        except UserInputError as error:
            raise UserInputError(f"{flag} {folder}: {error}") from None
    return FolderWeights(files, dtypes)


def check_saved_folder(
    path: str | os.PathLike, flag: str = "--model", needs_processor: bool = False, hub_ids: bool = True
) -> FolderWeights | None:
    """Refuse a saved folder whose files cannot make a model (see `folder_weights`; with `needs_processor`, one
    without preprocessor_config.json); None for a Hub id, which transformers fetches (safetensors only)."""
    check_model_folder(path, flag, hub_ids)
    folder = Path(path)
    if not folder.is_dir():
        return None
    try:
        read_json(folder / "config.json", "a model's config.json")
    except UserInputError as error:
        raise UserInputError(f"{flag} {folder}: {error}") from None
    if needs_processor and not (folder / PROCESSOR_NAME).is_file():
        raise _refuse(flag, folder, f"it has no {PROCESSOR_NAME}, which says how images are resized and normalized "
                      "for the model", "save the processor beside the model (processor.save_pretrained(folder)), or "
                      f"pass {WRITERS}")  # fmt: skip
    return folder_weights(folder, flag)


def _label_sized(saved: Any, built: Any, class_counts: tuple[int, int]) -> bool:
    """Whether two shapes differ only along one axis sized by the class count (old vs new; or one more, as
    detectors' denoising embeddings): a class head made anew for other classes."""
    saved, built = tuple(saved), tuple(built)
    differ = [axis for axis in range(len(saved)) if saved[axis] != built[axis]] if len(saved) == len(built) else []
    old, new = class_counts
    return len(differ) == 1 and {saved[differ[0]], built[differ[0]]} in ({old, new}, {old + 1, new + 1})


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:NAMED_KEYS])
    return shown + (f" and {len(keys) - NAMED_KEYS} more" if len(keys) > NAMED_KEYS else "")


def _drop_loading_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


def load_model_folder(
    model_class: Any,
    path: str | os.PathLike,
    flag: str = "--model",
    missing_check: Callable[[list[str]], None] | None = None,
    needs_processor: bool = False,
    class_counts: tuple[int, int] | None = None,
    head: str | None = None,
    **kwargs: Any,
) -> Any:
    """`model_class.from_pretrained(path, **kwargs)` through the gate: the folder's files checked first
    (`check_saved_folder`), safetensors only, and the loaded weights refused by name when they do not fit the config
    (missing, unexpected, of another shape or dtype) or are not finite, rather than initialised at random. A config
    whose whole model would exceed `train.ranges.MAX_PARAMETERS` is refused before it is built.

    `missing_check` may refuse the missing weights first with a more specific message. `class_counts` (the folder's
    classes, the new classes) lets the class heads alone be made anew, where the two differ. `head` (a prefix, e.g.
    "classifier.") lets that head be made anew when the folder holds none of it: a backbone folder (FCMAE
    pre-training, a `ConvNextModel`) fine-tuned with a head.
    """
    from .train.ranges import check_model_size

    weights = check_saved_folder(path, flag, needs_processor)
    if weights is not None:
        _check_config_file(path, flag)
    hub_kwargs = {key: kwargs[key] for key in ("revision", "cache_dir") if key in kwargs}
    config = kwargs.get("config") or load_config(path, flag, **hub_kwargs)
    check_model_size(model_class, config, f"{flag} {os.fspath(path)} (config.json)")
    report_logger = logging.getLogger(LOADING_REPORT_LOGGER)
    report_logger.addFilter(_drop_loading_report)
    try:
        with loading_model(path, flag):
            model, info = model_class.from_pretrained(
                os.fspath(path), output_loading_info=True, ignore_mismatched_sizes=True, use_safetensors=True,
                **kwargs,
            )
    finally:
        report_logger.removeFilter(_drop_loading_report)
    if missing_check is not None:
        missing_check(sorted(info["missing_keys"]))
    head_keys = {key for key in model.state_dict() if head is not None and key.startswith(head)}
    if head_keys and head_keys <= set(info["missing_keys"]):
        logger.info("%s holds no %s weights (a backbone folder): the head starts afresh", os.fspath(path), head)
        info["missing_keys"] = sorted(set(info["missing_keys"]) - head_keys)
    mismatched = [(key, saved, built) for key, saved, built in sorted(info["mismatched_keys"])
                  if class_counts is None or not _label_sized(saved, built, class_counts)]  # fmt: skip
    problems = []
    if info["missing_keys"]:
        problems.append(f"{len(info['missing_keys'])} missing: {_names(sorted(info['missing_keys']))}")
    if info["unexpected_keys"]:
        problems.append(f"{len(info['unexpected_keys'])} unexpected: {_names(sorted(info['unexpected_keys']))}")
    if mismatched:
        shapes = [f"{key} {tuple(saved)} for {tuple(built)}" for key, saved, built in mismatched]
        problems.append(f"{len(shapes)} of another shape: {_names(shapes)}")
        num_labels = getattr(model.config, "num_labels", None)
        heads = [(key, saved) for key, saved, built in mismatched if tuple(built)[:1] in ((num_labels,),)]
        if heads and class_counts is None:
            problems.append(f"config.json's id2label names {num_labels} classes, but {heads[0][0]} holds "
                            f"{tuple(heads[0][1])[0]}")  # fmt: skip
    if problems:
        raise UserInputError(
            f"{flag} {os.fspath(path)}: its weights do not fit its config.json (weights {'; '.join(problems)}). The "
            f"two describe different models (was config.json edited, or the weights replaced?); pass {WRITERS}, "
            "which writes both from one model."
        )
    if weights is not None:
        state = model.state_dict()
        retyped = [f"{key} ({weights.dtypes[key]})" for key in sorted(state)
                   if key in weights.dtypes and state[key].is_floating_point()
                   and weights.dtypes[key] not in FLOAT_DTYPES]  # fmt: skip
        if retyped:
            raise _refuse(flag, Path(path), f"weights stored as integers or booleans where the model has floats: "
                          f"{_names(retyped)}", f"pass {WRITERS}")  # fmt: skip
    refuse_non_finite(model, f"{flag} {os.fspath(path)}", "the saved weights are broken (a diverged run?); load an "
                      "earlier checkpoint or train again with a lower learning rate")  # fmt: skip
    return model


# Errors transformers raises on a settings file whose values have the wrong type or shape (a list where a name
# belongs, null for a count): hostile data, not a bug, once the file is read.
_WRONG_SHAPE = (TypeError, AttributeError, KeyError, IndexError, OverflowError, ZeroDivisionError)
# config.json entries every transformers configuration reads, and the JSON types each may have (null: the default).
_NULL = type(None)
_COMMON_CONFIG_TYPES = {
    "model_type": (str,), "architectures": (list, _NULL), "num_labels": (int, _NULL), "id2label": (dict, _NULL),
    "label2id": (dict, _NULL), "auto_map": (dict, _NULL), "problem_type": (str, _NULL),
    "backbone_config": (dict, _NULL),
}  # fmt: skip


# The image mode with as many channels as a processor normalizes: the small image its trial run processes.
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@contextmanager
def _reading(path: str | os.PathLike, flag: str, file: str) -> Iterator[None]:
    """Within the block, an error of transformers' reading `file` of the folder becomes one `UserInputError`."""
    try:
        with loading_model(path, flag):
            yield
    except UserInputError:
        raise
    except _WRONG_SHAPE as error:
        reason = one_line(error)
        raise UserInputError(f"{flag} {os.fspath(path)}: {file} holds a value of the wrong type or shape ({reason}); "
                             f"pass {WRITERS}.") from error  # fmt: skip


def _check_config_file(path: str | os.PathLike, flag: str) -> None:
    """A local folder's config.json read as data first: a JSON object whose common entries have their JSON types and
    whose numbers lie in their ranges, before transformers builds anything from it (a label map of 10^9 classes)."""
    from .annotations import Problems, read_json_file, shown_value
    from .train.ranges import check_config_ranges

    file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(file):
        return
    settings = read_json_file(file, flag, WRITERS)
    problems = Problems(f"{flag} {file}")
    if not isinstance(settings, dict):
        problems.add("", f"the file holds a JSON {type(settings).__name__}, not an object")
    else:
        for key, kinds in _COMMON_CONFIG_TYPES.items():
            value = settings.get(key)
            if key in settings and (not isinstance(value, kinds) or isinstance(value, bool)):
                names = " or ".join("null" if kind is _NULL else kind.__name__ for kind in kinds)
                problems.add(key, f"{shown_value(value)} is not a {names}")
        labels = settings.get("id2label")
        if isinstance(labels, dict):
            for index in labels:
                if not index.strip().lstrip("-").isdigit():
                    problems.add(f"id2label.{index}", f"{shown_value(index)} is not a class index (0, 1, ...)")
    problems.refuse(f"Pass {WRITERS}.")
    check_config_ranges(settings, f"{flag} {os.fspath(path)} (config.json)")


def load_config(path: str | os.PathLike, flag: str = "--model", **kwargs: Any) -> Any:
    """The folder's configuration (`AutoConfig`), refused in one line when it cannot be read, holds values of the wrong
    type, or a setting lies outside its range (`train.ranges.CONFIG_RANGES`: a detector of 10^6 queries, UperNet pool
    scales of 0), before any model is built from it. No code from the folder runs."""
    import transformers

    from .train.ranges import check_config_ranges

    _check_config_file(path, flag)
    with _reading(path, flag, "config.json"):
        # An auto_map naming a model type nothing registered is refused, not prompted for.
        config = transformers.AutoConfig.from_pretrained(os.fspath(path), trust_remote_code=False, **kwargs)
    check_config_ranges(config.to_dict(), f"{flag} {os.fspath(path)} (config.json)")
    return config


def _check_processor_class(path: str | os.PathLike, flag: str) -> None:
    """Refuse a local preprocessor_config.json naming an image processor class nobody has (transformers would call
    it custom code, to be run from the folder)."""
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    from .annotations import read_json_file, shown_value

    file = os.path.join(os.fspath(path), "preprocessor_config.json")
    if not os.path.isfile(file):
        return
    settings = read_json_file(file, flag, WRITERS)
    name = settings.get("image_processor_type") if isinstance(settings, dict) else None
    if name is not None and (not isinstance(name, str) or get_image_processor_class_from_name(name) is None):
        raise UserInputError(
            f"{flag} {file}: image_processor_type {shown_value(name)} is no image processor transformers or "
            f"convnext-hf has; name one (as {WRITERS} write it)."
        )


def load_image_processor(
    path: str | os.PathLike, flag: str = "--model", missing_ok: bool = False, **kwargs: Any
) -> Any:
    """The folder's image processor (`AutoImageProcessor`), refused in one line when it cannot be read (None instead
    when `missing_ok`), when its sizes lie outside their range (`train.ranges.PROCESSOR_RANGES`: a 30000² resize), or
    when it cannot process a small image (a size of null, a mean of the wrong length): before any real image is."""
    import transformers
    from PIL import Image

    from .train.ranges import check_processor_ranges

    _check_processor_class(path, flag)
    try:
        with _reading(path, flag, "preprocessor_config.json"):
            processor = transformers.AutoImageProcessor.from_pretrained(os.fspath(path), trust_remote_code=False,
                                                                        **kwargs)  # fmt: skip
    except UserInputError:
        if missing_ok:
            return None
        raise
    check_processor_ranges(processor, f"{flag} {os.fspath(path)}")
    mean = getattr(processor, "image_mean", None)
    mode = _MODES.get(len(mean), "RGB") if isinstance(mean, list | tuple) else "RGB"
    with _reading(path, flag, "preprocessor_config.json"):
        processor(images=Image.new(mode, (8, 8)), return_tensors="pt")
    return processor
