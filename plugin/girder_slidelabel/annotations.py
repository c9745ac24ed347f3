"""Labels and predictions as large_image annotations on the slide's Girder item.

The annotation JSON is slidelabel's own DSA export (:func:`slidelabel.services.dsa_annotation.annotation`);
this module adds what only Girder has: the item of the superpixel image that the ``pixelmap``
element colours (ids RGB-encoded as ``R + 256 G + 65536 B`` at the working level, the element's
``transform`` scales it to level 0), made once per slide next to the slide item, and the
annotation saved through girder_large_image_annotation, which validates it against its schema.
HistomicsUI then shows it like any other annotation. Who may: a viewer of the slide's project,
as for slidelabel's own export routes (the Girder route asks write access to the item besides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from girder.models.folder import Folder
from girder.models.item import Item
from girder.models.upload import Upload
from girder_large_image.models.image_item import ImageItem
from girder_large_image_annotation.models.annotation import Annotation
from sqlalchemy import select

from girder_slidelabel.links import SUPERPIXELS_OF
from girder_slidelabel.users import member
from slidelabel.errors import NotFoundError
from slidelabel.services.access import Action, check_access
from slidelabel.services.dsa_annotation import Elements, annotation
from slidelabel.services.slide_classes import Source, slide_classes
from slidelabel.services.tiles import label_map, pack_ids
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Slide

#: Tile side of the superpixel image (px); zlib keeps the encoded ids exact (JPEG would not).
TILE_PX = 256
PACKED_FILE = "superpixels-rgb.tiff"


def _tiles(ids_level, width: int, height: int):
    """Full ``TILE_PX`` RGB tiles of one level, row by row, padded with id 0 at the edges."""
    for top in range(0, height, TILE_PX):
        for left in range(0, width, TILE_PX):
            tile = np.zeros((TILE_PX, TILE_PX, 3), np.uint8)
            w, h = min(TILE_PX, width - left), min(TILE_PX, height - top)
            tile[:h, :w] = pack_ids(ids_level(left, top, w, h))
            yield tile


def write_packed_superpixels(folder: Path, out: Path) -> None:
    """The superpixel label map of ``folder`` as a tiled RGB pyramid TIFF at ``out``: a window of
    ``TILE_PX`` squares at a time, so memory does not grow with the slide."""
    labels = label_map(folder)
    (height, width), *reduced = labels.shapes
    with tifffile.TiffWriter(out, bigtiff=True) as tiff:
        options = {"dtype": np.uint8, "tile": (TILE_PX, TILE_PX), "photometric": "rgb", "compression": "zlib"}
        tiff.write(_tiles(lambda *w: labels.window(0, *w), width, height), shape=(height, width, 3),
                   subifds=len(reduced), **options)
        for level, (h, w) in enumerate(reduced, start=1):
            tiff.write(_tiles(lambda *win, k=level: labels.window(k, *win), w, h), shape=(h, w, 3),
                       subfiletype=1, **options)


def superpixel_item(slide_item: dict, slide: Slide, files: ProjectFiles, creator: dict) -> dict:
    """The Girder item of the slide's superpixel image beside ``slide_item``, made on first use."""
    existing = Item().findOne({SUPERPIXELS_OF: slide_item["_id"], "folderId": slide_item["folderId"]})
    if existing is not None:
        return existing
    folder = files.superpixels(slide.id)
    packed = files.slide_dir(slide.id) / PACKED_FILE
    write_packed_superpixels(folder, packed)
    parent = Folder().load(slide_item["folderId"], force=True)
    item = Item().createItem(f"{slide_item['name']} (slidelabel superpixels)", creator, parent, reuseExisting=False)
    Item().update({"_id": item["_id"]}, {"$set": {SUPERPIXELS_OF: slide_item["_id"]}})
    with packed.open("rb") as stream:
        file = Upload().uploadFromFile(stream, packed.stat().st_size, PACKED_FILE, "item", item, creator,
                                       mimeType="image/tiff")
    packed.unlink()
    item = Item().load(item["_id"], force=True)
    if "largeImage" in item:  # large_image makes readable uploads large images itself
        return item
    return ImageItem().createImageItem(item, file, user=creator, createJob=False)


def export_to_item(database: Database, data_dir: Path, slide_item: dict, slide_id: int, creator: dict, *,
                   source: Source, epoch: int | None = None, elements: Elements = Elements.pixelmap) -> dict:
    """Save the slide's labels or predictions (of ``epoch``, default the latest) as a large_image
    annotation on ``slide_item`` made by the Girder user ``creator``, a viewer of the slide's
    project at least (else :class:`NotFoundError` or :class:`PermissionDeniedError`); returns the
    saved annotation document."""
    with database.session() as session:
        project_id = session.scalar(select(Slide.project_id).where(Slide.id == slide_id))
    if project_id is None:
        raise NotFoundError(f"no slide {slide_id}")
    user = member(database, creator, project_id)
    with database.session() as session:
        project = check_access(session, user, project_id, Action.view).project
        slide = session.get(Slide, slide_id)
        files = ProjectFiles(data_dir, project.id)
        classes = slide_classes(session, files, slide, source, epoch)
        pixels = superpixel_item(slide_item, slide, files, creator) if elements is not Elements.polygons else None
        document = annotation(classes, project, elements=elements,
                              girder_id=str(pixels["_id"]) if pixels is not None else None)
    return Annotation().createAnnotation(slide_item, creator, document)
