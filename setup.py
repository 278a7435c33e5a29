"""Packaging for clicktodial. Tool settings (ruff, mypy, pytest) live in pyproject.toml."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# Read the version without importing the package (its dependencies may not be installed yet).
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "clicktodial" / "__init__.py").read_text(), re.M
).group(1)  # type: ignore[union-attr]

setup(
    name="clicktodial",
    version=VERSION,
    description="Click-to-dial telephony daemon: SIP registrar and RFC 3725 call controller",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # twisted.plugins holds our twistd dropin; twisted/ and twisted/plugins/ have no
    # __init__.py, so find_packages does not see it and it is listed by hand.
    packages=find_packages(include=["clicktodial", "clicktodial.*"]) + ["twisted.plugins"],
    # Data files inside the package (templates, static files, migrations) listed in MANIFEST.in.
    include_package_data=True,
    package_data={"clicktodial": ["py.typed"]},
    zip_safe=False,
    install_requires=[
        "Twisted>=24.7",
        "zope.interface>=6",
        "SQLAlchemy>=2",
        "attrs>=23.1",
        "treq>=23.11",
        "argon2-cffi>=23.1",
        "alembic>=1.13",
        "psycopg[binary]>=3",
        "prometheus-client>=0.20",
        # pcap of a call's SIP (docs/calls.md, "Call traces"): writes the file and the
        # IP/UDP/TCP headers with their checksums.
        "dpkt>=1.9.8",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "mypy>=1.10",
            "mypy-zope>=1.0.5",
            "ruff>=0.6",
            "setuptools>=64",
            "wheel",
            # tests/interop/test_browser.py drives Debian's chromium (never `playwright install`).
            "playwright>=1.40",
            # Media tests decode the RTP we send and check tones with an FFT.
            "numpy>=1.26",
            # tests/interop/test_security_*.py and test_guess_limits.py attack the daemon with
            # SIPVicious (svwar, svcrack).
            "sipvicious>=0.3.4",
        ],
    },
    entry_points={"console_scripts": ["clicktodial = clicktodial.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
        "Topic :: Communications :: Telephony",
    ],
)
