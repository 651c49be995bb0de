"""Reading checkpoints without running any code they contain.

PyTorch files go through `torch.load(weights_only=True)`; PaddlePaddle `.pdparams` (a pickle of numpy arrays) through
an unpickler that can build numpy arrays and nothing else; safetensors and transformers folders need no unpickling.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import UserInputError

# What a broken or foreign file makes torch.load raise besides UnpicklingError (which may also mean "asks for code").
UNREADABLE_ERRORS = (
    RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError, MemoryError,
    struct.error, zipfile.BadZipFile,
)

# The weight files a checkpoint folder may hold (transformers' `model.safetensors` / `pytorch_model.bin`, shards).
INDEX_NAME = "model.safetensors.index.json"
FOLDER_WEIGHT_SUFFIXES = (".safetensors", ".bin")

# Where training frameworks nest the weights inside a checkpoint, most specific first.
CONTAINER_KEYS = ("state_dict", "model", "module")

# Paddle 2.x adds this bookkeeping entry (parameter name -> internal tensor name) to every `paddle.save`d dict.
PADDLE_NAME_TABLE = "StructuredToParameterName@@"


class UnsafeCheckpointError(UserInputError):
    """The file asks the unpickler for something other than tensors and plain data."""


@dataclass
class Checkpoint:
    """A flat mapping of parameter names to tensors, with the transformers config stored beside them, if any, and
    the `meta` an mmcv / mmengine checkpoint stores with them (plain data, checked by `claims.mm_meta_claims`)."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    meta: dict[str, Any] | None = None


class PendingArray:
    """What the allowed `_reconstruct` returns instead of an array: the array is built from the pickle's `BUILD`
    state only once its declared size is checked against the bytes the file holds, so a small file cannot make numpy
    allocate gigabytes."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"an array state of {type(state).__name__} instead of numpy's 5-tuple")
        _, shape, dtype, fortran_order, data = state
        self.array = _array_from_bytes(data, dtype, shape, "F" if fortran_order else "C")


def _array_from_bytes(data: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """An array of `shape` and `dtype` over `data`, refused unless the bytes are exactly what the shape declares."""
    if isinstance(data, bytearray | memoryview | pickle.PickleBuffer):
        data = bytes(data)
    if not isinstance(data, bytes) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("an array whose data is not raw bytes of a plain numeric dtype")
    if not isinstance(shape, tuple) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise pickle.UnpicklingError(f"an array with shape {shape!r}")
    declared = math.prod(shape) * dtype.itemsize
    if declared != len(data):
        raise DeclaredSizeError(
            f"an array declares shape {shape} of {dtype} ({declared} bytes) but holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


class DeclaredSizeError(pickle.UnpicklingError):
    """An array whose declared size is not the size of its data."""


class ArrayClass:
    """Stands for `numpy.ndarray` in a pickle, where it is only `_reconstruct`'s first argument: calling the real class
    would allocate whatever shape the file declares."""


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> PendingArray:
    """numpy's `_reconstruct(ndarray, (0,), b"b")`, without allocating whatever shape the file declares."""
    if subtype is not ArrayClass:
        raise pickle.UnpicklingError(f"an array of type {subtype!r}")
    return PendingArray()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's pickle protocol 5 constructor, size-checked."""
    return _array_from_bytes(buffer, dtype, tuple(shape) if isinstance(shape, list) else shape, order)


def _scalar(dtype: Any, data: Any) -> np.generic:
    """numpy's `scalar(dtype, bytes)`, size-checked."""
    return _array_from_bytes(data, dtype, (), "C")[()]


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """`_codecs.encode(text, "latin1")`: how pickle protocol 2 stores bytes (numpy's raw array data included)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("an _codecs.encode call other than protocol 2's bytes")
    return text.encode("latin1")


# The only callables a pickle may name: numpy's array, dtype and scalar constructors (size-checked versions), and the
# latin-1 encoding protocol 2 stores bytes with.
NUMPY_GLOBALS = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): ArrayClass,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}

# The same size-checked callables for torch.load(weights_only=True), for PyTorch files that hold numpy arrays.
TORCH_NUMPY_GLOBALS = [
    *((function, f"{module}.{name}") for (module, name), function in NUMPY_GLOBALS.items() if module != "_codecs"),
    PendingArray,
    *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"},  # torch builds a dtype only of an allowed class
]

# A module and attribute name as a pickle that really asks for code spells them.
PYTHON_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array constructors in `NUMPY_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS:
            return NUMPY_GLOBALS[(module, name)]
        if not (PYTHON_NAME.fullmatch(module) and PYTHON_NAME.fullmatch(name)):
            raise pickle.UnpicklingError(f"a malformed global name {module!r}.{name!r}")
        raise UnsafeCheckpointError(
            f"Refusing to unpickle: the file asks for `{module}.{name}`, which could run code. A PaddlePaddle "
            "`.pdparams` file holds only numpy arrays; re-export it from Paddle with `paddle.save(model.state_dict())` "
            "or obtain it from the official release."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids, which PyTorch's pickles use and .pdparams files never do")


def _from_numpy(name: str, value: Any, path: Path) -> torch.Tensor:
    if isinstance(value, PendingArray):
        if value.array is None:
            raise UserInputError(f"{path} is corrupt: entry {name!r} declares an array but holds no data for it.")
        value = value.array
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiubc":
        raise UserInputError(
            f"{path}: entry {name!r} is {type(value).__name__}, not a numeric array; this is not a parameter file."
        )
    # Big-endian arrays (saved on such a machine) hold the same numbers; torch reads native byte order only.
    return torch.from_numpy(value.astype(value.dtype.newbyteorder("="), copy=False))


def _load_pdparams(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as handle:
        try:
            # latin1: numpy's raw array data in a Python 2 pickle is a str of bytes.
            content = NumpyOnlyUnpickler(BoundedReader(handle, path.stat().st_size), encoding="latin1").load()
        except UnsafeCheckpointError as error:
            raise UnsafeCheckpointError(f"{path}: {error}") from None
        except DeclaredSizeError as error:
            raise UserInputError(
                f"{path} is corrupt: {error}; nothing that large was read. Obtain the file again."
            ) from None
        except (pickle.UnpicklingError, *UNREADABLE_ERRORS) as error:
            raise UserInputError(
                f"{path} is unreadable or corrupt: not a complete .pdparams pickle of numpy arrays "
                f"({type(error).__name__}: {error}). Obtain the file again, or pass the right file."
            ) from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path} holds a {type(content).__name__}, not a dict of parameters.")
    content.pop(PADDLE_NAME_TABLE, None)
    return {name: _from_numpy(name, value, path) for name, value in content.items()}


# Bytes per element of the storage classes a legacy (pre-1.6, not zip) PyTorch pickle names; others count as the widest.
LEGACY_ELEMENT_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4,
    "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1, "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}  # fmt: skip
WIDEST_ELEMENT = 16


class BoundedReader:
    """A binary file for an unpickler that never asks the file for more than it holds: a length field declaring
    gigabytes then reads what is there (and the pickle is found truncated) instead of sizing a buffer by it."""

    def __init__(self, handle: Any, size: int) -> None:
        self.handle, self.size = handle, size

    def read(self, count: int = -1) -> bytes:
        """At most `count` bytes, never more than remain in the file."""
        remaining = max(self.size - self.handle.tell(), 0)
        return self.handle.read(remaining if count < 0 else min(count, remaining))

    def readline(self) -> bytes:
        """One line, no longer than what remains in the file."""
        return self.handle.readline(max(self.size - self.handle.tell(), 0))


class _Placeholder:
    """What a global of a legacy PyTorch pickle stands for while its storages are counted: any call, state or item
    is accepted and ignored, so nothing the file names is imported or run."""

    name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        """Ignored (a list's APPEND)."""

    def extend(self, items: Any) -> None:
        """Ignored (a list's APPENDS)."""


class _StorageCounter(pickle.Unpickler):
    """Reads a legacy PyTorch pickle without building anything, adding up the bytes its storages declare."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle, encoding="latin1")
        self.declared: dict[Any, int] = {}

    def find_class(self, module: str, name: str) -> type:
        return type(name, (_Placeholder,), {"name": name})

    def persistent_load(self, pid: Any) -> None:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            return None
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"a storage declaring {numel!r} elements")
        size = LEGACY_ELEMENT_SIZES.get(getattr(storage_type, "name", ""), WIDEST_ELEMENT)
        self.declared[repr(key)] = numel * size
        return None


def _check_declared_sizes(path: Path) -> None:
    """Refuse a PyTorch file whose tensors declare more bytes than it holds, before torch.load allocates them: a
    legacy (not zip) file's storages are allocated at their declared size before their data is read, and a zip
    archive's records at the size its directory declares."""
    file_size = path.stat().st_size
    if tarfile_like(path):
        raise UserInputError(
            f"{path} is a tar archive (PyTorch's format before 0.4, or another archive); it is not read. Load and "
            "re-save it with torch.save in a current PyTorch, or pass the right file."
        )
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise UserInputError(f"{path} is unreadable or corrupt: a damaged zip archive ({error}).") from None
        what = "its zip directory declares"
    else:
        try:
            with open(path, "rb") as handle:
                counter = _StorageCounter(BoundedReader(handle, file_size))
                for _ in range(4):  # magic number, protocol version, system info, then the tensors
                    counter.load()
        except (pickle.UnpicklingError, RecursionError, *UNREADABLE_ERRORS):
            return  # not a legacy PyTorch pickle: torch.load says what it is
        declared = sum(counter.declared.values())
        what = "its tensors declare"
    if declared > file_size:
        raise UserInputError(
            f"{path} is corrupt: {what} {declared:,} bytes but the file holds {file_size:,}; nothing that large was "
            "read. Obtain the file again."
        )


def tarfile_like(path: Path) -> bool:
    """Whether `path` is an uncompressed tar archive (the `ustar` magic at offset 257)."""
    with open(path, "rb") as handle:
        handle.seek(257)
        return handle.read(5) == b"ustar"


def _load_torch(path: Path) -> Checkpoint:
    _check_declared_sizes(path)
    try:
        with torch.serialization.safe_globals(TORCH_NUMPY_GLOBALS):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        asks_for = next((line for line in lines if "GLOBAL" in line), None)
        if asks_for is None:
            reason = next((line for line in lines if "Unsupported" in line or "load key" in line), lines[0])
            raise UserInputError(
                f"{path} is unreadable or corrupt: not a PyTorch checkpoint torch.load can read ({reason}). Obtain the "
                "file again, or pass the right file."
            ) from None
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: torch.load(weights_only=True) rejected it ({asks_for}); such a pickle could run "
            "code. Only plain state dicts of tensors are converted; if the file should be an official checkpoint, "
            "download it again (its checksum will be verified)."
        ) from None
    except UNREADABLE_ERRORS as error:
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise UserInputError(
            f"{path} is unreadable or corrupt: not a PyTorch checkpoint torch.load can read "
            f"({type(error).__name__}: {detail}). Obtain the file again, or pass the right file."
        ) from None
    return _unwrap(content, path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except SafetensorError as error:
        raise UserInputError(
            f"{path} is not a readable safetensors file ({error}); it is truncated, corrupt or of another format. "
            "Obtain the file again, or pass the right file."
        ) from None


def _merge(
    sources: list[tuple[str, dict[str, torch.Tensor]]], remedy: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One state dict from several named parts. A name held twice with identical values is kept once (with a notice);
    with different values the checkpoint is refused: which one is the model cannot be guessed."""
    merged: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    repeated: dict[tuple[str, str], int] = {}
    for source, tensors in sources:
        for name, value in tensors.items():
            if name in merged:
                earlier = merged[name]
                same = earlier.dtype == value.dtype and earlier.shape == value.shape and torch.equal(earlier, value)
                if not same:
                    raise UserInputError(
                        f"{name!r} is held twice with different values ({origin[name]} and {source}); which one is "
                        f"the model cannot be told from the file. {remedy}"
                    )
                repeated[origin[name], source] = repeated.get((origin[name], source), 0) + 1
                continue
            merged[name] = value
            origin[name] = source
    notices = [
        f"{count} tensors are held twice, identical, as {first} and {second}; each was kept once."
        for (first, second), count in repeated.items()
    ]
    return merged, notices


def _plain_tensors(content: dict[Any, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The state dict with text names and dense tensors of their own: names that are not text, sparse or data-less
    (meta) tensors are refused by name; tensors that share memory with another (views saved together) are copied,
    since a saved model cannot hold shared tensors."""
    odd_name = next((name for name in content if not isinstance(name, str)), None)
    if odd_name is not None:
        raise UserInputError(
            f"{path} holds the entry {odd_name!r} ({type(odd_name).__name__}), but parameter names are text; pass "
            "the file that holds the model's state dict."
        )
    for name, value in content.items():
        if value.layout != torch.strided or value.is_meta:
            kind = "data-less (meta)" if value.is_meta else f"{value.layout} (not dense)"
            raise UserInputError(
                f"{path}: {name!r} is a {kind} tensor; a ConvNeXt checkpoint holds dense tensors with their values. "
                "Save the model's state dict after loading its weights."
            )
    owners: set[tuple[int, int]] = set()
    plain = {}
    for name, value in content.items():
        storage = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        plain[name] = value.clone() if storage in owners and value.numel() else value
        owners.add(storage)
    return plain


def _unwrap(content: Any, path: Path) -> Checkpoint:
    """Find the state dict inside a training checkpoint (`{"model": ...}`, `{"meta", "state_dict"}`, ...)."""
    left_out: list[str] = []
    meta = content.get("meta") if isinstance(content, dict) and isinstance(content.get("meta"), dict) else None
    while isinstance(content, dict) and not all(isinstance(value, torch.Tensor) for value in content.values()):
        container = next((key for key in CONTAINER_KEYS if isinstance(content.get(key), dict)), None)
        if container is None:
            raise UserInputError(
                f"{path} holds a dict with keys {sorted(map(str, content))[:8]} but no state dict under any of "
                f"{CONTAINER_KEYS}; pass the file that holds the model's parameters."
            )
        # Other state dicts beside the one converted (an EMA copy, `model_ema` / `state_dict_ema`): said, not merged.
        left_out += [str(key) for key, value in content.items() if key != container and _holds_tensors(value)]
        content = content[container]
    if not isinstance(content, dict) or not content:
        raise UserInputError(f"{path} holds no parameters (found {type(content).__name__}).")
    content = _plain_tensors(content, path)
    # DataParallel / DistributedDataParallel save every name under `module.`; a file holding both spellings holds two
    # models or one model twice.
    plain = {key: value for key, value in content.items() if not key.startswith("module.")}
    wrapped = {key.removeprefix("module."): value for key, value in content.items() if key.startswith("module.")}
    tensors, notices = _merge(
        [("plain names", plain), ("`module.`-prefixed names", wrapped)],
        f"Save one copy of the state dict to convert ({path}).",
    )
    if left_out:
        notices.append(
            f"also holds {left_out}, other weights than the ones converted (e.g. an EMA copy); to convert one of "
            "those, save it alone (`torch.save(checkpoint[NAME], PATH)`) and convert that file."
        )
    return Checkpoint(tensors, files=[path], notices=[f"{path}: {notice}" for notice in notices], meta=meta)


def _holds_tensors(value: Any) -> bool:
    """Whether `value` is a non-empty dict of tensors (a state dict)."""
    return isinstance(value, dict) and bool(value) and all(isinstance(item, torch.Tensor) for item in value.values())


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`, or one clear error saying why the file is not one."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path} is not valid JSON ({error}); {what} must be a JSON object.") from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path} holds a JSON {type(content).__name__}; {what} must be a JSON object.")
    return content


def shard_names(index_file: Path) -> tuple[list[str], dict[str, str]]:
    """The shard files an index names, each checked to be a plain relative path inside the folder, and its weight
    map."""
    weight_map = read_json(index_file, "a checkpoint index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(value, str) for value in weight_map.values()):
        raise UserInputError(
            f"{index_file} has no `weight_map` object of parameter name -> shard file name; pass an intact index."
        )
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        parts = PurePosixPath(shard.replace("\\", "/")).parts
        if not shard or PurePosixPath(shard).is_absolute() or Path(shard).is_absolute() or ".." in parts:
            raise UserInputError(
                f"{index_file} names the shard {shard!r}, which is not inside the checkpoint folder; shard paths must "
                "be file names relative to the folder. Refusing to read it."
            )
    return shards, weight_map


def check_index(index_file: Path, weight_map: dict[str, str], parts: list[tuple[str, dict]]) -> None:
    """Refuse an index whose weight map does not list exactly the tensors its shards hold, each in its shard."""
    actual = {name: shard for shard, tensors in parts for name in tensors}
    wrong = sorted(name for name in set(actual) | set(weight_map) if actual.get(name) != weight_map.get(name))
    if wrong:
        name = wrong[0]
        raise UserInputError(
            f"{index_file} does not match its shards: {len(wrong)} tensor(s) are not where it says, e.g. {name!r} "
            f"(index: {weight_map.get(name)}, shards: {actual.get(name)}). The index or a shard is from another "
            "checkpoint; pass an intact folder."
        )


def _load_folder(path: Path, weights_file: str | None = None) -> Checkpoint:
    config_file = path / "config.json"
    if config_file.exists() and not config_file.is_file():
        raise UserInputError(f"{config_file} is not a file; a checkpoint folder's config.json must be a JSON file.")
    config = read_json(config_file, "a checkpoint's config.json") if config_file.is_file() else None
    chosen_index = weights_file is not None and weights_file.endswith(".index.json")
    index_file = path / (weights_file if chosen_index else INDEX_NAME)
    weight_map = None
    if weights_file is not None and (Path(weights_file).name != weights_file or not (path / weights_file).is_file()):
        present = sorted(p.name for p in path.iterdir() if p.suffix in FOLDER_WEIGHT_SUFFIXES)
        raise UserInputError(
            f"--weights_file {weights_file!r} is not a file in {path} (weight files there: {present}); pass the "
            "name of one of them."
        )
    if weights_file is not None and not chosen_index:
        files = [path / weights_file]
    elif index_file.is_file():
        shards, weight_map = shard_names(index_file)
        files = [path / shard for shard in shards]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise UserInputError(f"{index_file} names shards that are not in {path}: {missing}; pass the whole folder.")
        others = sorted(p.name for p in path.iterdir() if p.suffix in FOLDER_WEIGHT_SUFFIXES and p.is_file()
                        and p.name not in shards)  # fmt: skip
        if others and weights_file is None:
            raise UserInputError(
                f"{path} holds weight files besides the shards {index_file.name} names: {others} (transformers would "
                f"load model.safetensors first, this index otherwise). Choose with --weights_file NAME: one of "
                f"{others} or {index_file.name}."
            )
    else:
        files = sorted(p for p in path.iterdir() if p.suffix in FOLDER_WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise UserInputError(f"{path} is a folder without weights; expected model.safetensors (transformers' layout).")
    loaded = [_load_file(file) for file in files]
    parts = [(file.name, checkpoint.tensors) for file, checkpoint in zip(files, loaded, strict=True)]
    notices = [notice for checkpoint in loaded for notice in checkpoint.notices]
    if weight_map is not None:
        check_index(index_file, weight_map, parts)
    if len(files) > 1 and weight_map is None and weights_file is None:
        # Several files without an index: e.g. a model and its EMA copy, or safetensors beside a .bin. Merging them
        # would let one silently win, so they are converted only when they hold the very same tensors.
        names = [name for name, _ in parts]
        remedy = f"Choose the file to convert with --weights_file NAME (one of {names})."
        if len({frozenset(tensors) for _, tensors in parts}) != 1:
            raise UserInputError(f"{path} holds several weight files with different parameters ({names}). {remedy}")
        tensors, _ = _merge(parts, f"{path} holds several weight files that differ ({names}). {remedy}")
        notice = f"{path}: the weight files {names} hold identical tensors; converted {names[0]}."
        return Checkpoint(tensors, config, files[:1], [*notices, notice])
    tensors, merged = _merge(parts, f"Pass an intact checkpoint folder ({path}).")
    return Checkpoint(tensors, config, files, [*notices, *(f"{path}: {notice}" for notice in merged)])


def _load_file(path: Path) -> Checkpoint:
    """One weight file of any supported format."""
    if path.suffix == ".safetensors":
        return Checkpoint(_load_safetensors(path), files=[path])
    if path.suffix == ".pdparams":
        return Checkpoint(_load_pdparams(path), files=[path])
    return _load_torch(path)


def load_checkpoint(path: str | Path, weights_file: str | None = None) -> Checkpoint:
    """Read the parameters stored at `path` (a file in any supported format, or a transformers folder; `weights_file`
    names the one to read in a folder that holds several)."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"Checkpoint {path} does not exist; pass an existing file, folder or an http(s) URL.")
    if weights_file is not None and not path.is_dir():
        raise UserInputError(f"--weights_file chooses a file inside a checkpoint folder; {path} is not a folder.")
    if path.is_dir():
        checkpoint = _load_folder(path, weights_file)
    elif not path.is_file():
        raise UserInputError(f"Checkpoint {path} is not a regular file; pass a checkpoint file or folder.")
    elif path.stat().st_size == 0:
        raise UserInputError(f"Checkpoint {path} is empty (0 bytes); the download or copy did not complete.")
    else:
        checkpoint = _load_file(path)
    checkpoint.notices += _float8_notices(checkpoint.tensors, path)
    return checkpoint


# 8-bit float weights are converted, not refused: every float8 value is a float32 value, so the float32 model holds
# exactly the numbers of the file (as bfloat16 and float16 weights are). They are named because the file is a
# reduced-precision copy: the converted model computes what it holds, not what the full-precision release would.
FLOAT8_DTYPES = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                                                         "float8_e5m2fnuz") if hasattr(torch, name))  # fmt: skip


def _float8_notices(tensors: dict[str, torch.Tensor], path: Path) -> list[str]:
    """A notice naming the 8-bit float dtypes the weights are stored in (none: no notice)."""
    counts: dict[str, int] = {}
    for value in tensors.values():
        if value.dtype in FLOAT8_DTYPES:
            name = str(value.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return []
    listing = ", ".join(f"{count} in {name}" for name, count in counts.items())
    return [
        f"{path}: weights stored as 8-bit floats ({listing}) are converted to float32 value for value (exactly); the "
        "model computes what this reduced-precision copy holds, not what a full-precision release would."
    ]
