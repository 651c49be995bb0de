"""A model folder the user names (`--model`): refused in one line when it is not one, before and while loading."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from safetensors import SafetensorError

from .errors import UserInputError

WRITERS = "a folder written by save_pretrained, `convnext-hf convert` or `convnext-hf train`"
# The logger of transformers' loading report, which our refusal of a folder whose weights do not fit replaces.
LOADING_REPORT_LOGGER = "transformers.modeling_utils"
NAMED_KEYS = 3  # weights named in a refusal per kind; the rest are counted


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
    **kwargs: Any,
) -> Any:
    """`model_class.from_pretrained(path, **kwargs)`, refusing a folder whose weights do not fit its config.json
    (weights missing, unexpected or of another shape) by name rather than initialising what is missing at random;
    `missing_check` may refuse the missing weights first with a more specific message."""
    report_logger = logging.getLogger(LOADING_REPORT_LOGGER)
    report_logger.addFilter(_drop_loading_report)
    try:
        with loading_model(path, flag):
            model, info = model_class.from_pretrained(
                os.fspath(path), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
    finally:
        report_logger.removeFilter(_drop_loading_report)
    if missing_check is not None:
        missing_check(sorted(info["missing_keys"]))
    problems = []
    if info["missing_keys"]:
        problems.append(f"{len(info['missing_keys'])} missing: {_names(sorted(info['missing_keys']))}")
    if info["unexpected_keys"]:
        problems.append(f"{len(info['unexpected_keys'])} unexpected: {_names(sorted(info['unexpected_keys']))}")
    if info["mismatched_keys"]:
        shapes = [f"{key} {tuple(saved)} for {tuple(built)}" for key, saved, built in sorted(info["mismatched_keys"])]
        problems.append(f"{len(shapes)} of another shape: {_names(shapes)}")
    if problems:
        raise UserInputError(
            f"{flag} {os.fspath(path)}: its weights do not fit its config.json (weights {'; '.join(problems)}). The "
            f"two describe different models (was config.json edited, or the weights replaced?); pass {WRITERS}, "
            "which writes both from one model."
        )
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
        reason = " ".join(str(error).split()) or type(error).__name__
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


def load_image_processor(
    path: str | os.PathLike, flag: str = "--model", missing_ok: bool = False, **kwargs: Any
) -> Any:
    """The folder's image processor (`AutoImageProcessor`), refused in one line when it cannot be read (None instead
    when `missing_ok`), when its sizes lie outside their range (`train.ranges.PROCESSOR_RANGES`: a 30000² resize), or
    when it cannot process a small image (a size of null, a mean of the wrong length): before any real image is."""
    import transformers
    from PIL import Image

    from .train.ranges import check_processor_ranges

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
