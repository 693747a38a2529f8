"""Lets torchvision import beside a torch build its compiled operators were not made for.

PyPI's torchvision wheels carry operators (nms, roi_align, ...) compiled against PyPI's CUDA build of torch. Beside
the CPU build of torch, loading them fails quietly and torchvision's `_meta_registrations` then raises at import
("operator torchvision::nms does not exist"), which also breaks transformers and sentence-transformers, since they
import torchvision when it is installed. This finder, installed when embedsvc is imported, answers that one
submodule with an empty module exactly when torchvision reports its operators missing; nothing changes when they
loaded. The classification models embedsvc serves never call those operators.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

_TARGET = "torchvision._meta_registrations"


class _EmptyModule(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "Skipped by embedsvc: torchvision's compiled operators did not load beside this torch."


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        extension = sys.modules.get("torchvision.extension")
        if extension is None or extension._has_ops():
            return None  # the operators loaded: import the real module
        return importlib.machinery.ModuleSpec(fullname, _EmptyModule())


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
