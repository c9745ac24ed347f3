"""Adds epochs with given metrics to a project of a running test server's database, as the server
tests add Epoch rows: the browser test's way to show the dashboard epochs it knows the numbers of.

    python tests/web/seed_epochs.py DATA_DIR PROJECT_ID '[{"number": 2, "labels": 50, "metrics": {...}}]'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Epoch


def main(data_dir: str, project_id: str, epochs: str) -> None:
    database = Database(Settings(data_dir=Path(data_dir)).database_url)
    with database.session(write=True) as session:
        session.add_all([Epoch(project_id=int(project_id), **epoch) for epoch in json.loads(epochs)])
    database.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:])
