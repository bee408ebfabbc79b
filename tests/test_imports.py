"""Every module of the package imports: a rename or a split that leaves a stale import fails here, in the
day-to-day run, not only in the end-to-end test that happens to reach it (mutation: `_redact` imported
from `dreamsolo.tracking` after it moved to `tracking.server` failed `dreamsolo ui` and this)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import dreamsolo

MODULES = sorted(m.name for m in pkgutil.walk_packages(dreamsolo.__path__, "dreamsolo."))


def test_the_package_has_its_modules():
    assert {"dreamsolo.tracking.ui", "dreamsolo.report.build", "dreamsolo.grids"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)
