"""The chaos suite reuses the integration tests' pool helpers (`pool_support.py`, `dev_pool.py`):
their folder goes on the import path here, as pytest puts a test module's own folder there."""

from __future__ import annotations

import sys
from pathlib import Path

_INTEGRATION = str(Path(__file__).resolve().parent.parent / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)
