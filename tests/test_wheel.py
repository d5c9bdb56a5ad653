"""The built wheel ships the provider catalogs and the py.typed marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from genrouter.catalog import load_catalog_file

REPO = Path(__file__).resolve().parents[1]
CATALOGS = ("fal.yaml", "replicate.yaml", "modal.yaml")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel once for this module, offline (no isolated build env to download)."""
    out = tmp_path_factory.mktemp("dist")
    argv = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    proc = subprocess.run(
        [*argv, str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("genrouter-*.whl")
    return built


def test_wheel_ships_every_provider_catalog(wheel: Path) -> None:
    """fal.yaml, replicate.yaml and modal.yaml are inside the wheel under genrouter/_catalogs."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for catalog in CATALOGS:
        assert f"genrouter/_catalogs/{catalog}" in names


def test_wheel_ships_py_typed(wheel: Path) -> None:
    """The wheel carries genrouter/py.typed, so type checkers use its annotations."""
    assert "genrouter/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_wheel_catalogs_match_the_repository(wheel: Path) -> None:
    """The catalogs in the wheel are byte-for-byte the files in providers/."""
    with zipfile.ZipFile(wheel) as archive:
        for catalog in CATALOGS:
            packed = archive.read(f"genrouter/_catalogs/{catalog}")
            assert packed == (REPO / "providers" / catalog).read_bytes(), catalog


def test_wheel_catalogs_validate(wheel: Path, tmp_path: Path) -> None:
    """Each catalog as packed in the wheel loads and validates."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path, members=[f"genrouter/_catalogs/{c}" for c in CATALOGS])
    for catalog in CATALOGS:
        parsed = load_catalog_file(tmp_path / "genrouter" / "_catalogs" / catalog)
        assert parsed.provider == Path(catalog).stem


def test_wheel_ships_the_modal_service(wheel: Path) -> None:
    """deploy/modal ships inside the wheel so InProcessModalTransport works from an install."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "genrouter/_deploy_modal/service.py" in names
    assert "genrouter/_deploy_modal/app.py" in names
