"""The one loader for tests that import a file of the kit that is no package (an Ansible module, a
filter plugin, a script a role ships), importable as `from module_loader import load_module` (the
pytest `pythonpath` of pyproject.toml)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import ansible.module_utils

ROOT = Path(__file__).resolve().parents[1]
# ansible.cfg's `module_utils`: what the kit's modules import as ansible.module_utils.NAME.
MODULE_UTILS = ROOT / "plugins" / "module_utils"


def load_module(name: str, path: str | Path) -> ModuleType:
    """The file `path` (relative to the repository, or absolute) imported as module `name` and
    registered in sys.modules (dataclasses look their module up there), with the kit's
    module_utils importable as Ansible ships them."""
    if str(MODULE_UTILS) not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(MODULE_UTILS))
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
