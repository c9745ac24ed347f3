"""The embedded (SQLAlchemy) broker's job queues exist before the first message, whoever starts first."""

import multiprocessing

from sqlalchemy import create_engine, text

from slidelabel.services.jobs import QUEUES, SLIDE_QUEUE, TASK_NAME
from slidelabel.settings import Settings
from slidelabel.workers.app import declare_queues, make_celery

STARTERS = 6


def _start_and_send(settings: Settings, barrier, answers) -> None:
    """What an API process or a worker does on start, then its first message, all at once."""
    celery = make_celery(settings)
    barrier.wait()
    try:
        declare_queues(celery)
        celery.send_task(TASK_NAME, args=[1], queue=SLIDE_QUEUE)
        answers.put("sent")
    except Exception as error:  # noqa: BLE001 - the answer names what a starting process met
        answers.put(f"{type(error).__name__}: {error}"[:200])


def test_processes_starting_on_a_fresh_broker_all_send_their_first_message(tmp_path):
    """CI once failed a first job on a fresh data folder: kombu's SQLAlchemy transport inserted
    the queue's row from the test and from the starting worker at once, and the loser raised
    ``IntegrityError`` on ``kombu_queue.name``. Six processes start together, three times."""
    fork = multiprocessing.get_context("fork")
    for trial in range(3):
        settings = Settings(data_dir=tmp_path / f"data-{trial}")
        settings.data_dir.mkdir()
        barrier, answers = fork.Barrier(STARTERS), fork.Queue()
        starters = [fork.Process(target=_start_and_send, args=(settings, barrier, answers)) for _ in range(STARTERS)]
        for process in starters:
            process.start()
        for process in starters:
            process.join(60)
        got = [answers.get(timeout=10) for _ in starters]
        assert got == ["sent"] * STARTERS, got
        engine = create_engine(f"sqlite:///{settings.data_dir / 'broker.sqlite'}")
        with engine.connect() as connection:
            names = connection.execute(text("select name from kombu_queue")).scalars().all()
            messages = connection.execute(text("select count(*) from kombu_message")).scalar()
        engine.dispose()
        assert sorted(names) == sorted(QUEUES) and messages == STARTERS, (names, messages)
