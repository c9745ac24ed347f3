"""Slide readers: large_image's tile sources as a registry, the order they are tried in, and its cache.

:data:`SLIDE_READERS` lists large_image's tile sources (``large_image.tilesource.AvailableTileSources``,
filled from the ``large_image.source`` entry points, so a new reader is a large_image plugin): a
reader is chosen by name or, by default, :data:`PREFERRED_READERS` first and then large_image's
own order of preference for the file's extension. Loading them also bounds large_image's cache.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import large_image.config
from large_image import tilesource
from large_image.exceptions import TileSourceError
from PIL import Image

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.pinned_files import INDEX_REFUSED, NAME_RESOLVING_READERS, index_by_content, is_reader_link
from slidelabel.pipelines.slide_files import SlideLimits
from slidelabel.registry import Registry

logger = logging.getLogger(__name__)

#: Readers tried before large_image's own order of preference. large_image-source-tiff 1.35.6
#: keeps about a byte per pixel read (measured: 1.1 MB more resident memory per megapixel region,
#: without end), so one pass over a 40,000 px TIFF would grow by gigabytes; OpenSlide reads the
#: same tiled TIFFs (and SVS, NDPI, DICOM, ...) without growing, and refuses what it cannot read.
PREFERRED_READERS = ("openslide",)

#: Decoded tiles large_image keeps (256 KB or more each): enough that the margins neighbouring
#: windows share are decoded once (on the JPEG 2000 sample, 20% faster than 64 tiles), few enough
#: that memory does not grow with the slide (256 tiles added 60 MB to the peak), and a bound that
#: does not depend on the machine's memory.
TILE_CACHE_TILES = 128


def _bound_tile_cache() -> None:
    """Keep large_image's tile cache in this process and bounded, unless configured otherwise.

    By default large_image sizes its cache as a share of the machine's memory (1/32: 750 MB on
    24 GB) and may put it in a memcached or Redis server it finds on localhost.
    """
    if large_image.config.getConfig("cache_backend") is None:
        large_image.config.setConfig("cache_backend", "python")
    if not int(large_image.config.getConfig("cache_tileCache_maximum", 0) or 0):
        large_image.config.setConfig("cache_tileCache_maximum", TILE_CACHE_TILES)


#: Pixels PIL decodes in one image at most: as many as one stored chunk of a slide may hold
#: (:class:`~slidelabel.pipelines.slide_files.SlideLimits`, 3 bytes a pixel). large_image decodes
#: JPEG tiles, and the whole image of its PIL reader, through PIL, and switches PIL's own guard off:
#: a tile whose JPEG stream declared 20000 x 20000 px in a 256 px tile was decoded whole, 1.2 GB a
#: request (the sixteenth attack).
MAX_DECODED_PIXELS = SlideLimits().max_chunk_bytes // 3
#: What readers raise for a file they cannot read: damaged, unsupported, an image declaring more
#: than :data:`MAX_DECODED_PIXELS`, or a stream PIL cannot decode (``OSError``: "broken data
#: stream"; a file gone or unreadable too).
READ_ERRORS = (TileSourceError, Image.DecompressionBombError, OSError)


def _bound_image_decoding() -> None:
    """Put PIL's guard back, at :data:`MAX_DECODED_PIXELS` (PIL refuses past twice its limit and
    warns past it: the warning is not for users)."""
    Image.MAX_IMAGE_PIXELS = MAX_DECODED_PIXELS // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _tile_sources(registry: Registry[type[tilesource.FileTileSource]]) -> None:
    _bound_tile_cache()
    _bound_image_decoding()
    if not tilesource.AvailableTileSources:
        tilesource.loadTileSources()
    for name, source in sorted(tilesource.AvailableTileSources.items()):
        extensions = sorted(ext for ext in getattr(source, "extensions", {}) if ext and ext != "default")
        registry.add(name, source, description=", ".join(extensions[:12]) + (", ..." if len(extensions) > 12 else ""),
                     default=name == PREFERRED_READERS[0])


#: Installed slide readers by name (large_image tile sources), sorted by name.
SLIDE_READERS: Registry[type[tilesource.FileTileSource]] = Registry("slide reader", None, load=_tile_sources)


def list_sources() -> list[str]:
    """Names of the installed large_image tile sources (slide readers), sorted."""
    return SLIDE_READERS.names()


def slide_extensions() -> set[str]:
    """File extensions (lower case, no dot) that some installed slide reader claims."""
    return {ext.lower() for source in SLIDE_READERS.values() for ext in getattr(source, "extensions", {}) if ext}


def open_reader(path: Path, source: str | None, **options: object) -> tuple[str, tilesource.FileTileSource]:
    """Open ``path`` with the named reader, or the first that can: :data:`PREFERRED_READERS`,
    then large_image's order; ``options`` go to the reader (``encoding``, ``edge``, ...)."""
    registry = dict(SLIDE_READERS.items())
    if is_reader_link(path):  # they would read the slide's name, not the pinned file
        if index_by_content(path):  # checked at each open: the file may have changed since it was pinned
            raise SlideUnreadableError(path, INDEX_REFUSED)
        if source in NAME_RESOLVING_READERS:
            raise SlideUnreadableError(path, f"the {source} reader opens files by name, which a server does not let it "
                                             "do with slides: choose another reader")
        registry = {name: reader for name, reader in registry.items() if name not in NAME_RESOLVING_READERS}
    ranked = [entry[-1] for entry in sorted(tilesource.getSortedSourceList(registry, str(path)))]
    preferred = [name for name in PREFERRED_READERS if name in registry]
    candidates = list(dict.fromkeys(preferred + ranked)) if source is None else [source]
    too_large = None
    for name in candidates:
        try:
            # noCache: large_image caches sources by path, which would return a stale reader for
            # a file rewritten in place; each Slide owns its own reader instead.
            return name, registry[name](str(path), noCache=True, **options)
        except Image.DecompressionBombError:
            too_large = (f"the {name} reader would decode over {MAX_DECODED_PIXELS:,} px at once: convert it to a "
                         "tiled pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid)")
        except TileSourceError as error:
            logger.debug("%s cannot open %s: %s", name, path, error)
    if too_large is not None:
        raise SlideUnreadableError(path, too_large)
    if source is not None:
        raise SlideUnreadableError(path, f"the {source} reader cannot open it")
    raise SlideUnreadableError(
        path, f"not an image any installed slide reader can open (tried: {', '.join(candidates)})"
    )
