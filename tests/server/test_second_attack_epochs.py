"""An epoch whose process was killed (by a Cancel it did not heed, its time limit, the OS) leaves
its staging folder ``epochs/.job-<id>.tmp`` (the predictions of every slide so far): the next
epoch of the project removes those of jobs that no longer run, so cancelled epochs do not fill
the disk."""

from __future__ import annotations

from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState
from test_epochs import annotator, cmu_files, label, rule, run_epoch, slide_id  # noqa: F401  (fixtures)


def test_the_next_epoch_removes_the_staging_folders_of_killed_epochs(app, client, project, sender, settings,
                                                                     slide_id, rule, annotator):
    for name in ("tumour", "stroma"):
        label(client, annotator, project, slide_id, rule[name], name)
    with app.state.database.session(write=True) as session:
        killed = Job(project_id=project["id"], kind="epoch", key="killed", state=JobState.cancelled)
        running = Job(project_id=project["id"], kind="epoch", key="elsewhere", state=JobState.running)
        session.add_all([killed, running])
        session.flush()
        killed_id, running_id = killed.id, running.id
    epochs = ProjectFiles(settings.data_dir, project["id"]).root / "epochs"
    leftover, busy = epochs / f".job-{killed_id}.tmp", epochs / f".job-{running_id}.tmp"
    for folder in (leftover, busy):
        (folder / "projects").mkdir(parents=True)
        (folder / "projects" / "predictions.npz").write_bytes(b"\0" * 1000)

    job = run_epoch(app, client, annotator, project)

    assert job["state"] == JobState.done, job
    assert not leftover.exists(), "the killed epoch's staging folder is still there"
    assert busy.exists(), "the staging folder of an epoch running elsewhere was removed"
    assert sorted(p.name for p in epochs.iterdir()) == sorted(["1", busy.name])
