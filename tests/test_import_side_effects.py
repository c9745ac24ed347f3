"""Importing slidelabel has no side effects: no registry is built (no extractor, model or slide
reader is loaded) until something uses it, and the server and workers start without torch, as do
listing the models and predicting with one that needs none."""

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


LINEAR_WITHOUT_TORCH = """
import pathlib, sys, tempfile
import numpy as np
from slidelabel.pipelines.models import MODELS, Category, load_model, save_model, train
from slidelabel.services.cohort import open_cohort_model
assert {"mlp", "cnn"} <= {entry.name for entry in MODELS.entries()} and "linear" in MODELS
feats_N_D = np.random.default_rng(0).normal(size=(40, 3))
model = train(feats_N_D, (feats_N_D[:, 0] > 0).astype(np.int64), [Category("a"), Category("b")],
              model="linear", feature_extractor="tissue")
path = pathlib.Path(tempfile.mkdtemp()) / "linear.slmodel"
save_model(model, path)
probs_N_C = open_cohort_model(path).model.predict_proba(feats_N_D)
assert probs_N_C.shape == (40, 2), probs_N_C.shape
assert load_model(path).predict_proba(feats_N_D).shape == (40, 2)
print("torch" in sys.modules)
"""


def test_listing_models_and_predicting_a_linear_one_import_no_torch() -> None:
    """The torch models (mlp, cnn) are listed without torch, which a cohort predicted by another
    model would otherwise carry (240 MB resident per worker)."""
    run = subprocess.run([sys.executable, "-c", LINEAR_WITHOUT_TORCH], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "False"
