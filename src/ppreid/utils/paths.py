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
