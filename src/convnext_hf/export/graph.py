"""Capture a saved model's own forward as an ONNX graph with dynamic batch, height and width.

The model is loaded through the transformers Auto class its `config.json` names, so every folder this package writes
(classifiers, feature extractors, backbones, UperNet segmenters, our format or the built-in one) exports the same way,
and new variants need nothing here. Which outputs a folder has is its task's (`convnext_hf.tasks`, the records'
`exports`); they become named graph outputs in a fixed order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn

from ..configuration_convnext import total_stride_of
from ..errors import UserInputError
from ..model_folder import check_model_folder, load_config, load_image_processor, load_model_folder, loading_model
from ..tasks import export_form, export_suffixes
from .options import DEFAULT_OPSET

INPUT_NAME = "pixel_values"
# The logger of torch.onnx's operator registry, which warns once per torchvision operator it cannot register.
TORCH_ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@dataclass
class Exportable:
    """A loaded model with the task it serves (or "backbone") and the names of its graph outputs."""

    model: transformers.PreTrainedModel
    task: str
    fields: tuple[str, ...]
    output_names: tuple[str, ...]
    image_size: int
    num_channels: int
    total_stride: int
    scores_top1: bool = False
    # Checked by its predictions (the module of the check's hooks), not tensor by tensor; see ExportForm.
    check: str | None = None
    fixed_size: bool = False
    strict_capture: bool = False
    int8_refusal: str | None = None


def load_exportable(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Exportable:
    """Load the model a saved folder holds, in eval mode and `dtype`, with its output names."""
    import convnext_hf  # noqa: F401  (registers our model type with the Auto classes)

    check_model_folder(model_dir, hub_ids=False)
    config = load_config(model_dir)
    architecture = (config.architectures or [""])[0]
    form = export_form(architecture)
    if form is None:
        raise UserInputError(
            f"{model_dir} holds a {architecture or 'model of unknown architecture'}; export handles "
            f"{', '.join('*' + suffix for suffix in export_suffixes())} folders."
        )
    # The class the Auto mapping names (AutoBackbone.from_pretrained itself would look the folder up on the Hub).
    model_class = getattr(transformers, form.auto_class)._model_mapping[type(config)]
    fields = form.fields
    output_names = tuple(config.out_features) if fields == ("feature_maps",) else fields
    backbone_config = getattr(config, "backbone_config", None) or config
    model = load_model_folder(model_class, model_dir, dtype=dtype).eval()
    with loading_model(model_dir):
        image_size = image_size_of(model_dir, backbone_config)
    return Exportable(
        model, form.kind, fields, output_names, image_size, backbone_config.num_channels, total_stride_of(config),
        form.scores_top1, form.check, form.fixed_size, form.strict_capture, form.int8_refusal,
    )


def image_size_of(model_dir: str | os.PathLike, config: transformers.PreTrainedConfig) -> int:
    """The side of the images the model's processor makes (its crop), else the config's `image_size`."""
    if not (Path(model_dir) / "preprocessor_config.json").is_file():
        return int(getattr(config, "image_size", 224))
    processor = load_image_processor(model_dir)
    size = processor.crop_size if getattr(processor, "crop_size", None) else processor.size
    size = dict(size)
    return int(size.get("shortest_edge") or size.get("height"))


class OutputTuple(nn.Module):
    """The model's forward on `pixel_values`, returning its outputs as a flat tuple in `output_names` order."""

    def __init__(self, model: nn.Module, fields: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.fields = tuple(fields)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values, return_dict=True)
        flat = []
        for field in self.fields:
            value = outputs[field]
            flat.extend(value if isinstance(value, tuple) else (value,))
        return tuple(flat)


def _window_sums(features: torch.Tensor, dim: int, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over adaptive pooling's `windows` windows along `dim` (from a cumulative sum), and the window lengths."""
    size = features.shape[dim]
    index = torch.arange(windows, device=features.device)
    start = (index * size) // windows
    end = ((index + 1) * size + windows - 1) // windows
    # In float64: the window sums are differences of running sums, which float32 would round at their magnitude.
    cumulative = features.double().cumsum(dim)
    cumulative = torch.cat([torch.zeros_like(cumulative.narrow(dim, 0, 1)), cumulative], dim)
    sums = cumulative.index_select(dim, end) - cumulative.index_select(dim, start)
    return sums, (end - start).double()


def adaptive_avg_pool2d(features: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d` from shape-agnostic ops.

    PyTorch's own decomposition bakes the window bounds of the traced size into the graph, so UperNet's pyramid
    pooling would be wrong at any other input size; here they are computed from the runtime size.
    """
    rows, row_lengths = _window_sums(features, -2, output_size[0])
    sums, column_lengths = _window_sums(rows, -1, output_size[1])
    return (sums / (row_lengths[:, None] * column_lengths[None, :])).to(features.dtype)


def capture(
    exportable: Exportable, example: torch.Tensor, dynamic: bool = True
) -> torch.export.ExportedProgram:
    """Trace the model's forward with torch.export: batch, height and width symbolic unless `dynamic` is False."""
    module = OutputTuple(exportable.model, exportable.fields).eval()
    axes = DYNAMIC_AXES if dynamic else {0: DYNAMIC_AXES[0]}
    # Dim.DYNAMIC accepts the size bounds the model implies instead of failing on them, and size-oblivious tracing
    # keeps a stage output of 1 pixel from being specialized; sizes other than the traced one are checked by parity.
    dynamic_shapes = {INPUT_NAME: dict.fromkeys(axes, torch.export.Dim.DYNAMIC)}
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(
            module, (example,), dynamic_shapes=dynamic_shapes, strict=exportable.strict_capture
        )
    aten = torch.ops.aten
    table = dict.fromkeys((aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default), adaptive_avg_pool2d)
    return program.run_decompositions(table)


def name_dynamic_axes(path: Path) -> None:
    """Call the symbolic input axes batch/height/width (torch.export numbers them) everywhere they appear."""
    import onnx

    model_proto = onnx.load(str(path), load_external_data=False)
    renames = {}
    for axis, name in DYNAMIC_AXES.items():
        dim = model_proto.graph.input[0].type.tensor_type.shape.dim[axis]
        if dim.dim_param:
            renames[dim.dim_param] = name
    for value in [*model_proto.graph.input, *model_proto.graph.output, *model_proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
    onnx.save(model_proto, str(path))


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message contains `fragment`."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Hide what torch.export and torch.onnx say on every export that concerns neither the model nor the user: a
    warning per torchvision operator when torchvision is not installed (ConvNeXt uses none), torch's own
    deprecation of LeafSpec inside its pytree code, and TorchDynamo's notice of transformers' output hooks."""
    registration = logging.getLogger(TORCH_ONNX_REGISTRATION_LOGGER)
    no_torchvision = DropMessages("torchvision is not installed")
    registration.addFilter(no_torchvision)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            # TorchDynamo (strict capture) on transformers' output-capturing hooks, which export drops.
            warnings.filterwarnings("ignore", message="While compiling, we found certain side effects",
                                    category=UserWarning)
            yield
    finally:
        registration.removeFilter(no_torchvision)


def export_onnx(
    exportable: Exportable, example: torch.Tensor, path: Path, opset: int, dynamic: bool = True
) -> None:
    """Write the model as an ONNX file at `path` (weights over 2 GB go to a `.data` file beside it)."""
    import onnx

    # Where onnx cannot convert an op to `opset`, its version converter logs a traceback and leaves the op as it
    # is; the checker below names the op instead, in one line.
    converter_log = logging.getLogger("onnxscript.version_converter")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)
    try:
        with quiet_torch_export():
            try:
                program = capture(exportable, example, dynamic)
            except Exception as error:  # torch.export raises many kinds; each names the construct it cannot trace
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise UserInputError(f"torch.export cannot capture this {type(exportable.model).__name__}: "
                                     f"{reason}") from error  # fmt: skip
            onnx_program = torch.onnx.export(
                program,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(exportable.output_names),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        converter_log.setLevel(level)
    onnx_program.save(path)
    name_dynamic_axes(path)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        if opset == DEFAULT_OPSET:
            raise
        # torch.onnx writes opset 18 and converts up; where onnx has no converter for an op it leaves the op as is.
        reason = (str(error).strip().splitlines() or ["invalid graph"])[0]
        raise UserInputError(f"torch.onnx could not write a valid opset {opset} graph ({reason}); choose another "
                             f"--opset (the default is {DEFAULT_OPSET}).") from error  # fmt: skip
    written = next(opset.version for opset in onnx.load(str(path), load_external_data=False).opset_import
                   if opset.domain in ("", "ai.onnx"))
    if written != opset:
        raise UserInputError(f"torch.onnx could not write opset {opset} (it wrote {written}); choose another --opset.")
