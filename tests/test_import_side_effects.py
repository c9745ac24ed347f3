"""Importing slidelabel has no side effects: no registry is built (no extractor, model or slide
reader is loaded) until something uses it, and the server and workers start without torch."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import importlib, json, pkgutil, sys
import slidelabel
from slidelabel.registry import Registry
for module in pkgutil.walk_packages(slidelabel.__path__, "slidelabel."):
    importlib.import_module(module.name)
built = sorted({value.kind for name, module in list(sys.modules.items()) if name.startswith("slidelabel")
                for value in vars(module).values() if isinstance(value, Registry) and value._loaded})
print(json.dumps({"built": built, "torch": "torch" in sys.modules}))
"""


def test_importing_every_module_builds_no_registry() -> None:
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["built"] == []


def test_the_server_app_imports_without_torch() -> None:
    code = "import sys, slidelabel.server.app, slidelabel.workers.tasks; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "False"
