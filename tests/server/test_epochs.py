"""Epochs on the real CMU slide with ``color`` features: train, predict, rank, serve the queue and
the prediction arrays; resubmission is a no-op, one category fails with a message, roles hold.

The labels follow a rule the features never see: the superpixel table's tissue fraction
(tissue-rich superpixels are "tumour", nearly glass ones "stroma"), so predictions of held-out
superpixels that follow the rule show the features, predictions and ids line up.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.pipelines.models import load_model
from slidelabel.services import job_runs, jobs
from slidelabel.services.projects import superpixel_options
from slidelabel.services.superpixels import compute_slide_superpixels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Role, Slide
from slidelabel.store.predictions import read_predictions
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import read_table

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


@pytest.fixture(scope="module")
def cmu_files(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> tuple[Path, Path]:
    """Superpixels (default options) and ``color`` features of the CMU slide, made once."""
    folder = tmp_path_factory.mktemp("cmu")
    compute_slide_superpixels(cmu_slide, folder / "superpixels", superpixel_options({}))
    extract_slide_features(cmu_slide, folder / "superpixels", folder / "color.zarr", extractor="color")
    return folder / "superpixels", folder / "color.zarr"


@pytest.fixture
def slide_id(app, settings, project: dict, cmu_slide: Path, cmu_files: tuple[Path, Path]) -> int:
    """The CMU slide in ``project`` with its superpixels and features in place (linked)."""
    superpixels, features = cmu_files
    count = read_table(superpixels / TABLE_FILE).ids.size
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=count)
        session.add(slide)
        session.flush()
        slide_id = slide.id
    files = ProjectFiles(settings.data_dir, project["id"])
    files.slide_dir(slide_id).joinpath("features").mkdir(parents=True)
    files.superpixels(slide_id).symlink_to(superpixels, target_is_directory=True)
    files.features(slide_id, "color").symlink_to(features, target_is_directory=True)
    return slide_id


@pytest.fixture
def rule(cmu_files: tuple[Path, Path]) -> dict[str, np.ndarray]:
    """Superpixel ids by tissue fraction: every other tissue-rich (>= 0.9) and nearly-glass
    (<= 0.1) one for training, the others held out, and 10 in between for the excluded glass."""
    fraction = read_table(cmu_files[0] / TABLE_FILE).tissue_fraction
    rich, bare = np.flatnonzero(fraction >= 0.9) + 1, np.flatnonzero(fraction <= 0.1) + 1
    between = np.flatnonzero((fraction > 0.3) & (fraction < 0.7)) + 1
    return {"tumour": rich[::2], "stroma": bare[::2], "held_tumour": rich[1::2], "held_stroma": bare[1::2],
            "glass": between[:10]}


def url(project: dict, path: str = "") -> str:
    return f"/api/v1/projects/{project['id']}{path}"


def label(client, headers: dict, project: dict, slide_id: int, superpixels: np.ndarray, name: str) -> None:
    category = next(c["id"] for c in project["categories"] if c["name"] == name)
    response = client.put(url(project, f"/slides/{slide_id}/labels"), headers=headers,
                          json={"superpixels": [int(s) for s in superpixels], "category_id": category})
    assert response.status_code == 200, response.text


def run_epoch(app, client, headers: dict, project: dict) -> dict:
    """Submit an epoch through the API and run it here; the job's row as a dict."""
    response = client.post(url(project, "/epochs"), headers=headers)
    assert response.status_code == 202, response.text
    started = time.perf_counter()
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        return {"id": job.id, "state": job.state, "message": job.message, "log": job.log,
                "seconds": time.perf_counter() - started}


@pytest.fixture
def annotator(member_headers) -> dict[str, str]:
    return member_headers(Role.annotator)


@pytest.fixture
def trained(app, client, project, sender, slide_id, rule, annotator) -> dict:
    """One finished epoch trained on the rule's training labels and 10 excluded glass labels."""
    for name in ("tumour", "stroma", "glass"):
        label(client, annotator, project, slide_id, rule[name], name)
    job = run_epoch(app, client, annotator, project)
    assert job["state"] == JobState.done, job
    return job


def test_epoch_writes_model_predictions_and_metrics(app, client, project, slide_id, rule, annotator, trained,
                                                   sender):
    assert sender.sent == [(jobs.TASK_NAME, [trained["id"]], jobs.EPOCH_QUEUE)]
    listed = client.get(url(project, "/epochs"), headers=annotator).json()
    assert [e["number"] for e in listed] == [1]
    metrics = listed[0]["metrics"]
    assert listed[0]["labels"] == rule["tumour"].size + rule["stroma"].size
    counts = {c["name"]: c["labels"] for c in metrics["label_counts"]}
    assert counts == {"tumour": rule["tumour"].size, "stroma": rule["stroma"].size, "glass": 10}
    assert metrics["cv_balanced_accuracy"] > 0.8 and metrics["cv_macro_f1"] > 0.8
    assert metrics["model_chosen"] == "linear" and metrics["strategy"] == "margin"
    print(f"\nepoch job on the CMU slide: {trained['seconds']:.2f} s in all; steps (s): {metrics['seconds']}; "
          f"{metrics['superpixels_predicted']} superpixels, {listed[0]['labels']} labels")

    model = client.get(url(project, "/epochs/1/model"), headers=annotator)
    assert model.status_code == 200 and model.headers["content-type"] == "application/zip"
    path = Path(app.state.settings.data_dir) / "downloaded.zip"
    path.write_bytes(model.content)
    assert [c.name for c in load_model(path).categories] == ["tumour", "stroma"]

    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    predictions = read_predictions(files.predictions(1, slide_id))
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    count = read_table(files.superpixels(slide_id) / TABLE_FILE).ids.size
    assert predictions.probs_N_C.shape == (count, 2)
    assert predictions.category_ids_C.tolist() == [tumour, stroma]
    assert files.ranking(1).exists() and not list(files.root.joinpath("epochs").glob(".job-*"))
    assert client.get(url(project, "/epochs/2"), headers=annotator).status_code == 404


def test_predictions_follow_the_rule_on_held_out_superpixels(client, project, slide_id, rule, annotator, trained):
    response = client.get(url(project, f"/slides/{slide_id}/predictions.bin"), headers=annotator)
    assert response.status_code == 200 and response.headers["x-epoch"] == "1"
    predicted = np.frombuffer(response.content, "<u4")
    certainty = np.frombuffer(client.get(url(project, f"/slides/{slide_id}/certainty.bin?epoch=1"),
                                         headers=annotator).content, np.uint8)
    assert predicted.size == certainty.size and predicted[0] == 0 and certainty[0] == 0
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    assert set(np.unique(predicted[1:]).tolist()) <= {tumour, stroma}
    recall = [(predicted[rule["held_tumour"]] == tumour).mean(), (predicted[rule["held_stroma"]] == stroma).mean()]
    print(f"\nheld-out recall tumour-rule {recall[0]:.2f}, stroma-rule {recall[1]:.2f}")
    assert np.mean(recall) > 0.85  # chance is 0.5
    assert certainty[1:].min() >= 127  # the top class of 2 has probability >= 0.5


def test_queue_skips_labelled_excluded_and_reviewed_superpixels(client, project, member_headers, slide_id, rule,
                                                                annotator, trained):
    response = client.get(url(project, "/queue"), headers=annotator, params={"n": 100})
    assert response.status_code == 200, response.text
    queue = response.json()
    assert queue["epoch"] == 1 and len(queue["items"]) == 100
    shown = [item["superpixel"] for item in queue["items"]]
    labelled = np.concatenate([rule["tumour"], rule["stroma"], rule["glass"]])
    assert not np.isin(shown, labelled).any() and len(set(shown)) == 100
    scores = [item["score"] for item in queue["items"]]
    assert scores == sorted(scores, reverse=True)
    first = queue["items"][0]
    assert first["predicted"] in [c["id"] for c in project["categories"][:2]] and 0.5 <= first["certainty"] <= 1
    assert first["thumbnail_url"] == url(project, f"/slides/{slide_id}/superpixels/{first['superpixel']}/thumbnail.png")
    x_min, y_min, x_max, y_max = first["bbox_level0"]
    assert x_min <= first["centroid_level0"][0] < x_max and y_min <= first["centroid_level0"][1] < y_max

    # Labelled and reviewed after the epoch: gone from the queue at once.
    label(client, annotator, project, slide_id, shown[:3], "glass")
    review = {"superpixels": shown[3:5], "category_id": project["categories"][0]["id"]}
    response = client.put(url(project, f"/slides/{slide_id}/reviews"), headers=member_headers(Role.reviewer),
                          json=review)
    assert response.status_code == 200, response.text
    next_queue = client.get(url(project, "/queue"), headers=annotator, params={"n": 5}).json()
    assert [item["superpixel"] for item in next_queue["items"]] == shown[5:10]
    assert client.get(url(project, "/queue"), headers=annotator, params={"slide_id": 999}).status_code == 404


def test_strategies_needing_samples_or_features_pick_a_batch_then_follow_their_prefilter(
        app, client, project, admin_headers, slide_id, rule, annotator, trained):
    labelled = np.concatenate([rule["tumour"], rule["stroma"], rule["glass"]])
    for number, strategy in enumerate(("bald", "diversity"), start=2):
        response = client.patch(url(project), headers=admin_headers, json={"strategy": strategy})
        assert response.status_code == 200, response.text
        assert run_epoch(app, client, annotator, project)["state"] == JobState.done
        metrics = client.get(url(project, f"/epochs/{number}"), headers=annotator).json()["metrics"]
        unlabelled = metrics["superpixels_predicted"] - labelled.size
        assert metrics["strategy"] == strategy and metrics["strategy_picks"] == 16 and metrics["ranked"] == unlabelled
        queue = client.get(url(project, "/queue"), headers=annotator, params={"n": 100}).json()
        shown = [item["superpixel"] for item in queue["items"]]
        assert queue["epoch"] == number and len(set(shown)) == 100 and not np.isin(shown, labelled).any()


def test_retraining_with_nothing_changed_is_a_no_op(app, client, project, slide_id, rule, annotator, trained,
                                                    sender):
    again = client.post(url(project, "/epochs"), headers=annotator)
    assert again.status_code == 202 and again.json()["id"] == trained["id"] and again.json()["state"] == "done"
    assert len(sender.sent) == 1
    label(client, annotator, project, slide_id, rule["held_tumour"][:5], "tumour")
    assert run_epoch(app, client, annotator, project)["state"] == JobState.done
    assert [e["number"] for e in client.get(url(project, "/epochs"), headers=annotator).json()] == [1, 2]


def test_one_category_fails_with_what_to_label(app, client, project, sender, slide_id, rule, annotator):
    label(client, annotator, project, slide_id, rule["tumour"], "tumour")
    label(client, annotator, project, slide_id, rule["glass"], "glass")
    job = run_epoch(app, client, annotator, project)
    assert job["state"] == JobState.failed
    assert "at least 2 categories" in job["message"] and "stroma" in job["message"] and "tumour (" in job["message"]
    assert not job["log"]  # a user's error, not a traceback
    print("\nfailed epoch:", job["message"])
    response = client.get(url(project, f"/slides/{slide_id}/predictions.bin"), headers=annotator)
    assert response.status_code == 404 and "no epoch yet" in response.json()["detail"]


def test_cold_start_queue_before_any_epoch(client, project, sender, slide_id, rule, annotator):
    label(client, annotator, project, slide_id, rule["glass"], "glass")
    started = time.perf_counter()
    queue = client.get(url(project, "/queue"), headers=annotator, params={"n": 8, "slide_id": slide_id}).json()
    print(f"\ncold start queue on the CMU slide: {1000 * (time.perf_counter() - started):.0f} ms (first request)")
    assert queue["epoch"] is None and len(queue["items"]) == 8
    assert all(item["predicted"] is None and item["score"] is None for item in queue["items"])
    assert not np.isin([item["superpixel"] for item in queue["items"]], rule["glass"]).any()


@pytest.mark.parametrize("role, status", [(Role.viewer, 403), (None, 404)])
def test_viewers_cannot_train_and_outsiders_see_nothing(client, project, sender, member_headers, role, status):
    headers = member_headers(role)
    assert client.post(url(project, "/epochs"), headers=headers).status_code == status
    assert client.get(url(project, "/epochs"), headers=headers).status_code == (200 if role else 404)
    assert client.get(url(project, "/queue"), headers=headers).status_code == (200 if role else 404)
    assert sender.sent == []


def test_epochs_report_calibration_estimated_accuracy_and_a_stopping_signal(
        app, client, project, slide_id, rule, annotator, trained):
    first = client.get(url(project, "/epochs/1"), headers=annotator).json()["metrics"]
    calibration, estimate = first["calibration"], first["estimated_accuracy"]
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    assert sum(b["count"] for b in calibration["bins"]) == first["n_training_labels"]
    assert all(0.5 <= b["confidence"] <= 1 and 0 <= b["accuracy"] <= 1 for b in calibration["bins"])
    # Temperature scaling minimises the log loss; on out-of-fold predictions that seldom worsens the ECE much.
    assert calibration["ece"] <= calibration["ece_before"] + 0.05
    assert estimate["low"] <= estimate["value"] <= estimate["high"] and estimate["n"] == first["n_training_labels"]
    assert first["changed_fraction"] is None and first["stopping"]["plateau"] is False
    assert first["normalisation"] == "slide"

    label(client, annotator, project, slide_id, rule["held_tumour"][:20], "tumour")
    assert run_epoch(app, client, annotator, project)["state"] == JobState.done
    second = client.get(url(project, "/epochs/2"), headers=annotator).json()["metrics"]
    assert 0 <= second["changed_fraction"] < 0.5
    assert second["stopping"]["sentence"].startswith("The last 20 labels changed")
    assert second["stopping"]["plateau"] == (second["changed_fraction"] < 0.01)
    print(f"\nsecond epoch: {second['stopping']['sentence']}")


@pytest.mark.parametrize("strategy", ["margin", "diversity"])
def test_the_server_and_the_simulator_rank_the_same_superpixels_first(
        app, client, project, admin_headers, slide_id, rule, annotator, cmu_files, strategy):
    """The server's epoch job and ``slidelabel simulate``'s round, given the same features and
    labels, ask about the same superpixels in the same order."""
    from slidelabel.services.learning_loop import run_epoch as loop_round
    from slidelabel.services.queue import read_ranking
    from slidelabel.services.simulation import LabelledImage, Pool, SimulationOptions
    from slidelabel.store.feature_files import open_features

    assert client.patch(url(project), headers=admin_headers, json={"strategy": strategy}).status_code == 200
    for name in ("tumour", "stroma"):
        label(client, annotator, project, slide_id, rule[name], name)
    assert run_epoch(app, client, annotator, project)["state"] == JobState.done
    server = read_ranking(ProjectFiles(app.state.settings.data_dir, project["id"]).ranking(1))

    feats_N_D = np.asarray(open_features(cmu_files[1])[:], np.float32)
    classes_N = np.zeros(feats_N_D.shape[0], np.int64)
    classes_N[rule["stroma"] - 1] = 1
    labelled_N = np.zeros(feats_N_D.shape[0], bool)
    labelled_N[np.concatenate([rule["tumour"], rule["stroma"]]) - 1] = True
    pool = Pool.of([LabelledImage("cmu", np.zeros((1, 1), np.int32), classes_N, feats_N_D, np.zeros((1, 1)))], "slide")
    options = SimulationOptions(extractor="color", model="linear", strategies=(strategy,), normalisation="slide")
    from slidelabel.pipelines.models import Category
    outcome = loop_round(pool.features, pool.labels(labelled_N), [Category("tumour"), Category("stroma")],
                         options.choices(strategy), assessed=False)
    simulated = outcome.pool.superpixels_P[outcome.ranked_R]
    assert simulated.size == server.superpixels_R.size > 100
    assert simulated[:50].tolist() == server.superpixels_R[:50].tolist()
    assert (simulated == server.superpixels_R).mean() > 0.99


def test_the_epoch_model_downloads_as_onnx_with_its_sidecar(client, project, annotator, trained):
    import io
    import json
    import zipfile
    response = client.get(url(project, "/epochs/1/model.onnx.zip"), headers=annotator)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = sorted(archive.namelist())
    assert [n.rsplit(".", 1)[1] for n in names] == ["json", "onnx"]
    sidecar = json.loads(archive.read(names[0]))
    assert sidecar["normalisation"] == "slide" and [c["name"] for c in sidecar["categories"]][:2] == ["tumour", "stroma"]
    assert client.get(url(project, "/epochs/7/model.onnx.zip"), headers=annotator).status_code == 404
