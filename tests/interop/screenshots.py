"""
Where the browser tests write their screenshots.

By default under the test's temporary directory, so a test run never rewrites the committed
documentation images. ``scripts/screenshots`` sets ``$CLICKTODIAL_SCREENSHOTS`` to
``docs/screenshots`` and runs the browser tests to regenerate them (docs/web.md).
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "CLICKTODIAL_SCREENSHOTS"


def screenshot_dir(tmp_path: Path, *parts: str) -> Path:
    """
    The (created) directory for a test's screenshots: ``parts`` under
    ``$CLICKTODIAL_SCREENSHOTS`` when it is set, else under ``tmp_path/screenshots``.
    """
    root = os.environ.get(ENVIRONMENT_VARIABLE)
    directory = (Path(root) if root else tmp_path / "screenshots").joinpath(*parts)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
