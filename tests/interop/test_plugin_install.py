"""
The built wheel carries the twistd plugin: installed into a fresh virtualenv, twistd finds
``clicktodial`` without the source checkout. (Packages have shipped without their dropin.)

The venv sees the system site-packages, so no network is needed for the dependencies; the
checkout is taken off ``sys.path`` inside it so that an editable install cannot stand in for
the wheel.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clicktodial import __version__

pytestmark = pytest.mark.interop

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240

# Run inside the venv: drop the checkout from sys.path (an editable install of this checkout
# adds it through a .pth file in the system site-packages), then run argv[2:].
WITHOUT_CHECKOUT = """
import os, sys
checkout = os.path.realpath(sys.argv[1])
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != checkout]
"""

FIND_PLUGIN = (
    WITHOUT_CHECKOUT
    + """
import json
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import clicktodial, twisted.plugins.clicktodial_plugin as dropin
print(json.dumps({
    "tapnames": sorted(p.tapname for p in getPlugins(IServiceMaker)),
    "package": clicktodial.__file__,
    "dropin": dropin.__file__,
}))
"""
)

TWISTD_HELP = (
    WITHOUT_CHECKOUT
    + """
from twisted.scripts.twistd import run
sys.argv = ["twistd", "--help"]
run()
"""
)

_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "dropin.cache",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    "var",
)


def run(argv: list[str], cwd: Path) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel from a copy of the checkout and install it into a fresh venv."""
    base = tmp_path_factory.mktemp("plugin-install")
    source = base / "source"
    # A copy, so that building leaves no build/ or egg-info in the checkout.
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE)
    dist = base / "dist"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        cwd=base,
    )
    [wheel] = dist.glob("clicktodial-*.whl")
    venv = base / "venv"
    # --without-pip: the venv uses the system pip, found through the system site-packages.
    run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        cwd=base,
    )
    python = venv / "bin" / "python"
    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=base,
    )
    workdir = base / "cwd"
    workdir.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "cwd": workdir}


def test_wheel_holds_the_dropin_but_no_twisted_package_init(installed: dict[str, Path]) -> None:
    """An __init__.py in twisted/ or twisted/plugins/ would shadow Twisted itself."""
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "twisted/plugins/clicktodial_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "clicktodial/tap.py" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_installed_wheel_provides_the_clicktodial_service_maker(
    installed: dict[str, Path],
) -> None:
    result = run(
        [str(installed["python"]), "-c", FIND_PLUGIN, str(REPO_ROOT)], cwd=installed["cwd"]
    )
    found = json.loads(result.stdout)
    assert "clicktodial" in found["tapnames"]
    venv = str(installed["venv"])
    assert found["package"].startswith(venv), "clicktodial imported from outside the venv"
    assert found["dropin"].startswith(venv), "the dropin came from outside the venv"


def test_twistd_help_in_the_venv_lists_clicktodial(installed: dict[str, Path]) -> None:
    result = run(
        [str(installed["python"]), "-c", TWISTD_HELP, str(REPO_ROOT)], cwd=installed["cwd"]
    )
    commands = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")]
    assert "clicktodial" in commands


def test_installed_console_script_runs(installed: dict[str, Path]) -> None:
    script = installed["venv"] / "bin" / "clicktodial"
    result = run([str(script), "version"], cwd=installed["cwd"])
    assert result.stdout == f"clicktodial {__version__}\n"
