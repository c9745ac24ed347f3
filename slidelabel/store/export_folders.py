"""Where the API builds an export before it sends it: ``<data>/exports/<random>/``, one folder per
download, removed once the download ends (sent, given up by the client, or cut off by a stopping
server). A server killed while it built or sent one cannot remove it, so ``serve`` removes them
all before it answers and again when it stops: no export folder outlives the server that made it.

Under the data folder, not the system's temporary folder, so that the sweep finds exactly the
folders of this data folder's server (every API process of it) and no other server's.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: The folder of export folders, under the data folder.
EXPORTS_FOLDER = "exports"


def new_export_folder(data_dir: Path) -> Path:
    """A new, empty folder (mode 0700) for one export under ``data_dir``/:data:`EXPORTS_FOLDER`."""
    parent = data_dir / EXPORTS_FOLDER
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="export-", dir=parent))


def sweep_export_folders(data_dir: Path) -> list[Path]:
    """Remove every export folder under ``data_dir``; the removed folders. Call it while no API
    process of this data folder runs: before the server takes requests, and after it stopped."""
    leftovers = sorted(path for path in (data_dir / EXPORTS_FOLDER).glob("*") if path.is_dir())
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers
