"""Every room of pamfr is placed in the import layers, packaged, and described: a room the
layers contract does not name would escape `lint-imports` altogether."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
ROOMS = sorted(
    p.parent.name for p in (REPO / "pamfr").glob("*/__init__.py") if p.parent.name != "migrations"
)


def _layered() -> list[str]:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return [room.strip() for line in layers for room in line.split("|")]


def test_the_rooms_are_the_ones_this_test_knows():
    assert {"identity", "store", "path", "service", "cli", "settings"} <= set(ROOMS)


def test_every_room_is_a_layer_once():
    layered = _layered()
    assert sorted(r.removeprefix("pamfr.") for r in layered) == ROOMS
    assert len(layered) == len(set(layered))


def test_no_contract_ignores_an_import():
    for contract in PYPROJECT["tool"]["importlinter"]["contracts"]:
        assert not contract.get("ignore_imports"), contract["name"]


def test_every_room_is_packaged():
    packaged = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert {f"pamfr.{room}" for room in ROOMS} <= packaged


def test_every_room_is_in_the_readme_layout_and_the_architecture():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("### Layout", 1)[1].split("\n\n", 2)[1]
    described = set(re.findall(r"`pamfr/([a-z0-9_]+)`", layout))
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert set(ROOMS) <= described
    assert {r for r in ROOMS if f"pamfr/{r}/" not in architecture} == set()
