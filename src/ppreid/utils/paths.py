"""Where the repository's own folders are, seen from the installed package.

``pip install -r requirements.txt`` installs ``ppreid`` in editable mode from the clone, so the Hydra
configs (``conf/``) sit beside ``src/``. ``PPREID_CONF_DIR`` points elsewhere when a copy of the
configs lives outside the clone.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = Path(os.environ.get("PPREID_CONF_DIR") or REPO_ROOT / "conf")


def load_entry_point(name: str):
    """An entry-point script of the repository root (``train.py``, ``embed.py``) as a module, loaded from its
    file once per process (the repository root is not an importable package): for tests and benchmarks
    that call its functions in-process."""
    import importlib.util
    import sys

    module_name = f"ppreid_script_{Path(name).stem}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]
