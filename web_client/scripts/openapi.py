"""Print the server's OpenAPI document (JSON) without starting it: the source of src/api/schema.d.ts."""

import json
import sys
import tempfile

from slidelabel.server.app import create_app
from slidelabel.settings import Settings

with tempfile.TemporaryDirectory() as folder:
    json.dump(create_app(Settings(data_dir=folder)).openapi(), sys.stdout, indent=1)
