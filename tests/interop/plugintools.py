"""
Installing an example plugin package (``examples/*``) as a user would, for one test module.

The package is pip-installed offline (``--no-deps --no-build-isolation --no-index``) into a
scratch ``--target`` directory put on ``sys.path``; removing that directory from ``sys.path``
afterwards uninstalls it, without touching the environment other tests run in.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


@contextmanager
def installed(example: str, module: str, scratch: Path) -> Iterator[Path]:
    """``examples/EXAMPLE`` installed (its top-level ``module`` importable) while inside."""
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = shutil.copytree(EXAMPLES / example, scratch / "source")
    target = scratch / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=120,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
