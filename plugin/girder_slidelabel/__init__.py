"""slidelabel as a Girder 5 plugin, for Digital Slide Archive deployments.

How it is put together, and why:

- **slidelabel's own API, mounted, not re-written.** slidelabel's FastAPI app is grafted on
  Girder's server tree at :data:`MOUNT` through a WSGI adapter (a2wsgi), so the API, its docs
  (``/slidelabel/docs``) and the web client are the very code that ``slidelabel serve`` runs,
  every route and error included. Re-writing them as Girder resources would copy some hundred
  routes and drift. What is Girder's is added as Girder routes (:mod:`girder_slidelabel.rest`).
- **Girder accounts, no second login**: slidelabel's ``current_user`` dependency is overridden
  (:mod:`girder_slidelabel.users`): a Girder token (header or bearer, or on reads ``?token=``
  or the login cookie) names the user, and folder access levels are the project roles; a gallery
  link opens only while Girder still gives its maker the rights to publish it.
- **Slides are Girder items**, read in place from the file large_image's Girder tile source
  reads (:mod:`girder_slidelabel.folders`).
- **Jobs** are slidelabel's Celery tasks, run by ``slidelabel worker`` processes on the same
  database and broker; the ``jobs`` plugin's list mirrors them (:mod:`girder_slidelabel.job_list`).
- **Exports** become large_image annotations with a ``pixelmap`` element on the item
  (:mod:`girder_slidelabel.annotations`), so HistomicsUI shows them.

Configuration is slidelabel's own: ``SLIDELABEL_DATA_DIR``, ``SLIDELABEL_DB``,
``SLIDELABEL_BROKER`` in the Girder server's environment (docs/deploy.md).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from a2wsgi import ASGIMiddleware
from girder import events
from girder.plugin import GirderPlugin, getPlugin, registerPluginStaticContent

from girder_slidelabel import job_list, links, rest
from girder_slidelabel.users import end_roles_of_deleted_folder, gallery_maker_still_known, girder_current_user
from slidelabel.server.app import create_app
from slidelabel.server.deps import current_user
from slidelabel.server.routers.gallery import link_maker_check
from slidelabel.settings import Settings

#: Where slidelabel's app lives on Girder's server: API at /slidelabel/api/v1, client at /slidelabel/.
MOUNT = "/slidelabel"
#: Set to 0 to leave Girder's job list alone (the plugin's tests mirror jobs by hand).
MIRROR_VARIABLE = "GIRDER_SLIDELABEL_JOB_MIRROR"
WEB = Path(__file__).parent / "web"


class SlidelabelPlugin(GirderPlugin):
    DISPLAY_NAME = "slidelabel"

    def load(self, info: dict) -> None:
        getPlugin("large_image").load(info)
        getPlugin("large_image_annotation").load(info)
        settings = Settings()
        app = create_app(settings)
        app.dependency_overrides[current_user] = girder_current_user
        # A gallery link's maker is checked as Girder has them now (users.gallery_maker_still_known).
        maker_check = functools.partial(gallery_maker_still_known, app.state.database)
        app.dependency_overrides[link_maker_check] = lambda: maker_check
        info["serverRoot"].graft(ASGIMiddleware(app), MOUNT)
        rest.register(info["apiRoot"], app.state.database, settings)
        links.ensure_indexes(app.state.database)
        events.bind("model.folder.remove", "slidelabel",
                    functools.partial(end_roles_of_deleted_folder, app.state.database))
        registerPluginStaticContent(plugin="slidelabel", css=[], js=["/girder-slidelabel.js"], staticDir=WEB,
                                    tree=info["serverRoot"])
        # large_image loads the jobs plugin; the check keeps the mirror off where it is missing.
        if getPlugin("jobs") is not None and getPlugin("jobs").loaded:
            events.bind("jobs.cancel", "slidelabel", functools.partial(job_list.cancel_in_slidelabel, app.state.database))
            if os.environ.get(MIRROR_VARIABLE) != "0":
                job_list.start_mirror(app.state.database)
