"""An epoch's model as a zip of ONNX and sidecar, with the project's category colours."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from slidelabel.errors import NotFoundError
from slidelabel.pipelines.models import Category, save_model, train
from slidelabel.services.accounts import create_user
from slidelabel.services.model_export import epoch_onnx_archive
from slidelabel.services.projects import add_category, create_project
from slidelabel.store.database import Database, migrate
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch


@pytest.fixture()
def epoch(tmp_path: Path):
    """``(database, data_dir, project_id, model)``: a project with two coloured categories and
    epoch 1, whose model file is a linear model on 6 features."""
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(database.engine)
    with database.session(write=True) as session:
        project = create_project(session, create_user(session, "owner", "a long password"), "Export")
        add_category(session, project, "tumour", color="#aa0000")
        add_category(session, project, "stroma", color="#00aa00")
        session.add(Epoch(project_id=project.id, number=1))
        project_id = project.id
    feats_N_D = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    model = train(feats_N_D, (feats_N_D[:, 0] > 0).astype(np.int64), [Category("tumour"), Category("stroma")],
                  model="linear", feature_extractor="x", cross_validate_model=False)
    path = ProjectFiles(tmp_path, project_id).model(1)
    path.parent.mkdir(parents=True)
    save_model(model, path)
    yield database, tmp_path, project_id, model
    database.dispose()


def test_the_archive_holds_a_graph_that_predicts_as_the_epoch_and_the_colours(epoch):
    database, data_dir, project_id, model = epoch
    with database.session() as session:
        content = epoch_onnx_archive(session, data_dir, project_id, 1)
    name = f"project-{project_id}-epoch-1-model"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sorted(archive.namelist()) == [f"{name}.json", f"{name}.onnx"]
        sidecar = json.loads(archive.read(f"{name}.json"))
        graph = archive.read(f"{name}.onnx")
    assert [(c["name"], c["color"]) for c in sidecar["categories"]] == [("tumour", "#aa0000"), ("stroma", "#00aa00")]
    assert sidecar["feature_names"] is None  # "x" is no registered extractor
    feats_N_D = np.random.default_rng(1).normal(size=(30, 6)).astype(np.float32)
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"features": feats_N_D})[0], model.predict_proba(feats_N_D),
                               atol=1e-5)


def test_an_epoch_that_does_not_exist_is_not_found(epoch):
    database, data_dir, project_id, _ = epoch
    with database.session() as session, pytest.raises(NotFoundError, match="no epoch 2"):
        epoch_onnx_archive(session, data_dir, project_id, 2)
