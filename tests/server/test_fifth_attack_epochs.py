"""Fifth attack on issue 13: each retrain after a label change queued one more epoch, so an
annotator who changed one label and pressed retrain eight times queued eight epochs of the whole
project on the epoch worker, which every project shares (134,091 labels: each epoch trains on all
of them), ahead of other projects' retrains. An epoch gathers the labels when it starts, so a
queued one already trains on later labels: a retrain while one is queued now returns it."""

from __future__ import annotations

from slidelabel.services import job_runs
from slidelabel.store.models import JobState
from test_epochs import annotator, cmu_files, label, rule, run_epoch, slide_id, url  # noqa: F401  (fixtures)


def test_retrains_while_an_epoch_is_queued_return_it(app, client, project, sender, slide_id, rule, annotator):
    for name in ("tumour", "stroma"):
        label(client, annotator, project, slide_id, rule[name], name)
    queued = []
    for superpixel in rule["held_tumour"][:5]:
        label(client, annotator, project, slide_id, [superpixel], "tumour")  # a new label state each time
        response = client.post(url(project, "/epochs"), headers=annotator)
        assert response.status_code == 202, response.text
        queued.append(response.json()["id"])
    assert len(set(queued)) == 1 and len(sender.sent) == 1
    job_runs.run(app.state.database, app.state.settings, queued[0])
    epoch = client.get(url(project, "/epochs/1"), headers=annotator).json()
    assert epoch["labels"] == len(rule["tumour"]) + len(rule["stroma"]) + 5  # the later labels too
    label(client, annotator, project, slide_id, rule["held_stroma"][:1], "stroma")
    after = run_epoch(app, client, annotator, project)
    assert after["id"] != queued[0] and after["state"] == JobState.done
