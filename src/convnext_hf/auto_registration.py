"""ConvNeXt's registration with transformers' Auto classes, run as soon as transformers is imported.

`import convnext_hf` stays light (the `convnext-hf` command and every `--help` import neither torch nor transformers),
yet `import convnext_hf` followed by `AutoModel.from_pretrained(folder)` must find the model. So `import convnext_hf`
registers at once when transformers is already imported, and otherwise installs an import hook: the registration
runs when transformers' import completes — or, when that import happens inside one of this package's modules
(which the registration imports), once that module has finished loading.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGE = __name__.rpartition(".")[0]
TRIGGER = "transformers"

_lock = threading.RLock()
_state = threading.local()
_registered = False
_transformers_loaded = False


def register() -> None:
    """Register ConvNeXt with the Auto classes, and mark its classes for save_pretrained's code copies (idempotent)."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
        from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification
        from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
        from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

        from .configuration_convnext import ConvNextConfig
        from .image_processing_convnext import ConvNextHFImageProcessor
        from .modeling_convnext import ConvNextBackbone, ConvNextForImageClassification, ConvNextModel

        AutoConfig.register(ConvNextConfig.model_type, ConvNextConfig, exist_ok=True)
        AutoModel.register(ConvNextConfig, ConvNextModel, exist_ok=True)
        AutoModelForImageClassification.register(ConvNextConfig, ConvNextForImageClassification, exist_ok=True)
        AutoBackbone.register(ConvNextConfig, ConvNextBackbone, exist_ok=True)
        # Not AutoImageProcessor.register: it matches configs by class name, so it would merge in the built-in
        # ConvNext's torchvision processor (and warn that torchvision is missing).
        IMAGE_PROCESSOR_MAPPING.register(ConvNextConfig, {"pil": ConvNextHFImageProcessor}, exist_ok=True)
        # No video processor: pipeline() probes for one, deriving an AutoVideoProcessor entry from the image
        # processor's auto_map, and would ask whether to trust that (nonexistent) remote code unless the config says
        # it has none locally.
        VIDEO_PROCESSOR_MAPPING.register(ConvNextConfig, {}, exist_ok=True)

        # save_pretrained copies the code files next to the weights, so saved folders load as remote code.
        ConvNextConfig.register_for_auto_class()
        ConvNextModel.register_for_auto_class("AutoModel")
        ConvNextForImageClassification.register_for_auto_class("AutoModelForImageClassification")
        ConvNextBackbone.register_for_auto_class("AutoBackbone")
        ConvNextHFImageProcessor.register_for_auto_class("AutoImageProcessor")


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _register_when_ready() -> None:
    """Register once transformers is loaded and no module of this package is half-way through its import."""
    if _transformers_loaded and not _registered and _depth() == 0:
        _remove_hook()
        register()


class _NotifyingLoader(importlib.abc.Loader):
    """Wraps the loader of transformers or of one of this package's modules to learn when its import completes."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        # get_resource_reader, is_package, get_source...: whatever the real loader offers.
        return getattr(self._loader, attribute)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """The wrapped loader's module."""
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run the module, then register if that completed what the registration waits for."""
        global _transformers_loaded
        _state.depth = _depth() + 1
        try:
            self._loader.exec_module(module)
        finally:
            _state.depth = _depth() - 1
        if self._name == TRIGGER:
            _transformers_loaded = True
        _register_when_ready()


class _ImportHook(importlib.abc.MetaPathFinder):
    """Finds transformers and this package's modules with the other finders, wrapping their loaders."""

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give, with a notifying loader; None for modules the hook does not watch."""
        if fullname != TRIGGER and not fullname.startswith(PACKAGE + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader, fullname)
                return spec
        return None


_hook = _ImportHook()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def register_on_transformers_import() -> None:
    """Register now if transformers is imported, else as soon as it is (see the module's docstring)."""
    global _transformers_loaded
    with _lock:
        if TRIGGER in sys.modules:
            _transformers_loaded = True
            _register_when_ready()
        elif _hook not in sys.meta_path:
            sys.meta_path.insert(0, _hook)
