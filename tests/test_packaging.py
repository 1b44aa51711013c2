"""Packaging: the sdist and the wheel build from a copy of the source tree, the wheel
installs and runs, and the version lives in one place (glowing_fiesta.__version__).

``python -m build`` builds in an isolated environment, so it fetches the build
requirements (setuptools, wheel) from the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from glowing_fiesta import __version__

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "glowing-fiesta"
PACKAGES = ("protocol", "store", "collector", "query", "glowing_fiesta")
JUNK = (".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis")


def copy_source(target: Path) -> None:
    """What a clean checkout would hold: git's files (tracked and new, not ignored)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():  # skip files deleted in the work tree
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*JUNK),
                        dirs_exist_ok=True)


def test_version_option_prints_the_package_version() -> None:
    result = subprocess.run([str(CLI), "--version"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == f"glowing-fiesta, version {__version__}"


@pytest.mark.slow
def test_sdist_and_wheel_build_install_and_run(tmp_path: Path) -> None:
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    copy_source(source)
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    assert sdist.name == f"glowing_fiesta-{__version__}.tar.gz"
    # Platform-specific: the wheel carries the optional C accelerator when gcc built it.
    assert wheel.name.startswith(f"glowing_fiesta-{__version__}-cp3")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"glowing_fiesta-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, package
    assert not any(name.startswith("tests/") for name in names)
    dashboard = {"query/web/index.html", "query/web/app.js", "query/web/vendor/uplot/LICENSE",
                 "query/web/vendor/uplot/uPlot.iife.min.js"}
    assert dashboard <= names, dashboard - names
    assert any(name.startswith("collector/_fastfeed") and name.endswith(".so") for name in names)
    assert f"\nVersion: {__version__}\n" in metadata
    assert "glowing-fiesta = glowing_fiesta.cli:main" in entry_points
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[1] for member in archive.getmembers()
                   if "/" in member.name}
    assert {"pyproject.toml", "setup.py", "glowing_fiesta/__init__.py", "collector/daemon.py",
            "collector/_fastfeed.c", "query/web/login.html",
            "query/web/vendor/uplot/uPlot.min.css"} <= members

    # The wheel installs and its console script runs (dependencies from this venv).
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import glowing_fiesta; print(glowing_fiesta.__file__)"],
        capture_output=True, text=True, timeout=60, check=True, env=env, cwd=tmp_path,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)
    version = subprocess.run(
        [str(site / "bin" / "glowing-fiesta"), "--version"],
        capture_output=True, text=True, timeout=60, check=True, env=env, cwd=tmp_path,
    )
    assert version.stdout.strip() == f"glowing-fiesta, version {__version__}"
