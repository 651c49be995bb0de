"""Reading checkpoints without running any code they contain.

PyTorch files go through `torch.load(weights_only=True)`; PaddlePaddle `.pdparams` (a pickle of numpy arrays) through
an unpickler that can build numpy arrays and nothing else; safetensors and transformers folders need no unpickling.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import UserInputError

# The only callables a pickle may name: what numpy needs to rebuild an array, a dtype or a scalar.
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

# Where training frameworks nest the weights inside a checkpoint, most specific first.
CONTAINER_KEYS = ("state_dict", "model", "module")

# Paddle 2.x adds this bookkeeping entry (parameter name -> internal tensor name) to every `paddle.save`d dict.
PADDLE_NAME_TABLE = "StructuredToParameterName@@"


class UnsafeCheckpointError(UserInputError):
    """The file asks the unpickler for something other than tensors and plain data."""


@dataclass
class Checkpoint:
    """A flat mapping of parameter names to tensors, with the transformers config stored beside them, if any."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array constructors in `NUMPY_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS:
            return NUMPY_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"Refusing to unpickle: the file asks for `{module}.{name}`, which could run code. A PaddlePaddle "
            "`.pdparams` file holds only numpy arrays; re-export it from Paddle with `paddle.save(model.state_dict())` "
            "or obtain it from the official release."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("Refusing to unpickle: the file uses persistent ids, which .pdparams never do.")


def _from_numpy(name: str, value: Any, path: Path) -> torch.Tensor:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
        raise UserInputError(
            f"{path}: entry {name!r} is {type(value).__name__}, not a numeric array; this is not a parameter file."
        )
    return torch.from_numpy(np.array(value, copy=True))


def _load_pdparams(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as handle:
        try:
            content = NumpyOnlyUnpickler(handle).load()
        except UnsafeCheckpointError as error:
            raise UnsafeCheckpointError(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError) as error:
            raise UserInputError(f"{path} is not a readable .pdparams pickle ({error}).") from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path} holds a {type(content).__name__}, not a dict of parameters.")
    content.pop(PADDLE_NAME_TABLE, None)
    return {name: _from_numpy(name, value, path) for name, value in content.items()}


def _load_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals(list(NUMPY_GLOBALS.values())):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), "a non-tensor object")
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: torch.load(weights_only=True) rejected it ({reason}); such a pickle could run "
            "code. Only plain state dicts of tensors are converted; if the file should be an official checkpoint, "
            "download it again (its checksum will be verified)."
        ) from None
    except RuntimeError as error:
        raise UserInputError(f"{path} is not a PyTorch checkpoint torch.load can read ({error}).") from None
    return _unwrap(content, path)


def _unwrap(content: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint (`{"model": ...}`, `{"meta", "state_dict"}`, ...)."""
    while isinstance(content, dict) and not all(isinstance(value, torch.Tensor) for value in content.values()):
        container = next((key for key in CONTAINER_KEYS if isinstance(content.get(key), dict)), None)
        if container is None:
            raise UserInputError(
                f"{path} holds a dict with keys {sorted(content)[:8]} but no state dict under any of "
                f"{CONTAINER_KEYS}; pass the file that holds the model's parameters."
            )
        content = content[container]
    if not isinstance(content, dict) or not content:
        raise UserInputError(f"{path} holds no parameters (found {type(content).__name__}).")
    return {key.removeprefix("module."): value for key, value in content.items()}


def _load_folder(path: Path) -> Checkpoint:
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
        files = [path / shard for shard in shards]
    else:
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise UserInputError(f"{path} is a folder without weights; expected model.safetensors (transformers' layout).")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file) if file.suffix == ".safetensors" else _load_torch(file))
    return Checkpoint(tensors, config, files)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read the parameters stored at `path` (a file in any supported format, or a transformers folder)."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"Checkpoint {path} does not exist; pass an existing file, folder or an http(s) URL.")
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".safetensors":
        return Checkpoint(load_file(path), files=[path])
    if path.suffix == ".pdparams":
        return Checkpoint(_load_pdparams(path), files=[path])
    return Checkpoint(_load_torch(path), files=[path])
