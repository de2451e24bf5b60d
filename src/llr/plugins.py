"""Run-time registration of last-layer methods (docs/design.md, "Adding a last-layer method"): the config's
``plugins``, Python modules or ``.py`` files that register methods when imported; jobs get them via LLR_PLUGINS."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from llr.errors import LLRError

ENV = "LLR_PLUGINS"  # os.pathsep-separated plugins of a job (set by the workflow)


def is_path(spec: str) -> bool:
    """A plugin given as a file (``.py`` or a path), not a module name."""
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def resolve(spec: str) -> str:
    """A plugin as jobs see it: an absolute file path (paths are relative to
    the working directory), or the module name unchanged."""
    return str(Path(spec).expanduser().resolve()) if is_path(spec) else spec


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin (once per process), which registers its methods;
    a one-line LLRError naming it when it is missing or fails to import."""
    if not isinstance(spec, str) or not spec.strip():
        raise LLRError(f"plugin {spec!r}: expected a module name or a .py file path")
    if not is_path(spec):
        try:
            return importlib.import_module(spec)
        except Exception as e:  # noqa: BLE001 - any import failure of a user's module is one line
            raise LLRError(f"plugin {spec!r}: cannot import: {type(e).__name__}: {e}") from None
    path = Path(resolve(spec))
    if not path.is_file():
        raise LLRError(f"plugin {spec!r}: no such file ({path})")
    name = f"llr_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise LLRError(f"plugin {spec!r}: not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001
        del sys.modules[name]
        raise LLRError(f"plugin {spec!r}: cannot import: {type(e).__name__}: {e}") from None
    return module


def load_plugins(specs: Iterable[str]) -> list[ModuleType]:
    """Import every plugin, in order."""
    return [load_plugin(s) for s in specs]


def to_env(specs: Iterable[str]) -> str:
    """The LLR_PLUGINS value of a list of plugins (file paths made absolute)."""
    return os.pathsep.join(resolve(s) for s in specs)


def load_from_env(environ: Mapping[str, str] | None = None) -> list[ModuleType]:
    """Import the plugins named in LLR_PLUGINS (a job's command line calls this first)."""
    value = (os.environ if environ is None else environ).get(ENV, "")
    return load_plugins(s for s in value.split(os.pathsep) if s)
