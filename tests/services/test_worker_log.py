"""The worker's log of a pool process killed on purpose (a cancelled job that reported nothing)."""

import logging
import sys

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError

from slidelabel.workers.tasks import OneLineWorkerLost


def _record(error: BaseException, raised: BaseException) -> logging.LogRecord:
    """Celery's record of ``error``, its ``exc_info`` that of ``raised`` (the error or its wrapper)."""
    try:
        raise raised
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord("celery.worker.request", logging.ERROR, __file__, 1, "Task handler raised error: %r",
                             (error,), exc_info)


def test_a_killed_pool_process_is_one_line_and_other_errors_keep_their_traceback():
    """Sixteenth attack: each Cancel that killed a job's process wrote 12 lines of Celery's
    traceback to the worker's log."""
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")
    for raised in (lost, ExceptionWithTraceback(lost, "Traceback ...")):
        record = _record(lost, raised)
        assert OneLineWorkerLost().filter(record)
        assert "Traceback" not in logging.Formatter().format(record)
        assert "signal 9" in record.getMessage()
    bug = ValueError("a bug")
    other = _record(bug, bug)
    assert OneLineWorkerLost().filter(other) and "Traceback" in logging.Formatter().format(other)
