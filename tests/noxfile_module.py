"""noxfile.py as a module, for the tests that read its tables and helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_NAME = "_akto_noxfile"
_PATH = Path(__file__).resolve().parent.parent / "noxfile.py"


def load_noxfile() -> ModuleType:
    """noxfile.py, executed once per process however many test modules ask.

    nox refuses a session name registered twice (a warning today, an error in a
    later nox), so the module is kept in ``sys.modules``.
    """
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module
