"""The structure of a TIFF-based slide file, read from its raw image directories before any reader
walks them: a file misnamed .ndpi, image directories (IFDs) that loop back, or more of them than a
slide has (:func:`structure_problem`). Reads no page beyond the first, so a file of a million
images or of one that lists itself as its own sub-image costs milliseconds, not minutes."""

from __future__ import annotations

import struct

import tifffile

#: Why a file named .ndpi that holds another TIFF cannot be judged (tifffile reads any file so
#: named with NDPI's 64-bit offsets: an SVS so named read as "2967 x 4121488756551188481 px").
NOT_NDPI = ("is named .ndpi but is no Hamamatsu NDPI file (its first image has no NDPI tags), so its headers "
            "cannot be read: give the file the extension of its format (e.g. .svs for an Aperio slide, .tif)")


def _misnamed_ndpi(tiff: tifffile.TiffFile) -> bool:
    """Whether tifffile read ``tiff`` as NDPI (by its name) though its first image is no NDPI's."""
    if not tiff.tiff.is_ndpi:
        return False
    try:
        first = tiff.pages.first
    except IndexError:  # no image read (a truncated file): the other checks say what is wrong
        return False
    return not first.is_ndpi


#: Image directories (IFDs: the images of the main chain and their sub-images) a slide file may have,
#: counted before tifffile builds a page for each. A whole-slide image has a few dozen: an SVS 4-8
#: (levels, thumbnail, label, macro), an NDPI 5-10, an RGB pyramidal OME-TIFF one image and ~10
#: sub-resolutions; 1,024 leaves room for a stack of a hundred planes of that pyramid. The
#: twenty-third attack: a chain of 100,000 16 x 16 px images (11 MB) took 22 s of checks and 1.6 GB,
#: then minutes in large_image's reader, which steps libtiff to each image in turn (quadratic).
MAX_IMAGE_DIRECTORIES = 1_024
#: Tags an IFD may list: tifffile ends a chain at an IFD that lists more, as damaged.
_MAX_IFD_TAGS = 4096
_SUBIFDS_TAG = 330
#: struct codes of the TIFF integer types, by type number, which tifffile takes as SubIFDs offsets.
_INTEGER_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}
#: struct codes of a tag's count and offset fields, by their size in bytes.
_UNSIGNED = {4: "I", 8: "Q"}
#: Why a file whose image directories lead back to one already read is refused.
LOOPED_DIRECTORIES = ("cannot be read: its image directories loop back (an image lists one already read as its next "
                      "image or sub-image), so a reader would read them for ever; the file is damaged or made so")


def structure_problem(tiff: tifffile.TiffFile) -> str | None:
    """Why the structure of ``tiff`` cannot be read (a misnamed NDPI, image directories that loop
    back or are too many), else None; reads no page beyond the first."""
    if _misnamed_ndpi(tiff):
        return NOT_NDPI
    try:
        first = tiff.pages.first.offset
    except IndexError:  # no image read (a truncated file): the other checks say what is wrong
        return None
    seen: set[int] = set()
    waiting = [(first, True)]  # IFD offset, whether in the main chain (whose next IFDs are read)
    while waiting:
        offset, in_chain = waiting.pop()
        if offset in seen:
            return LOOPED_DIRECTORIES
        seen.add(offset)
        if len(seen) > MAX_IMAGE_DIRECTORIES:
            return (f"has more than {MAX_IMAGE_DIRECTORIES:,} images (image directories, sub-images included); a slide "
                    "has a few dozen: convert it to a pyramidal TIFF of one slide, e.g. "
                    "vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg")
        subs, next_ifd = _linked_directories(tiff, offset)
        linked = [(sub, False) for sub in subs] + [(next_ifd, True)] * in_chain
        waiting.extend((at, chained) for at, chained in linked if 0 < at < tiff.filehandle.size)
    return None


def _linked_directories(tiff: tifffile.TiffFile, offset: int) -> tuple[list[int], int]:
    """File offsets of the IFDs that the IFD at ``offset`` of ``tiff`` leads to, as tifffile reads
    them: its SubIFDs (tag 330; at most :data:`MAX_IMAGE_DIRECTORIES` + 1) and its next IFD (0
    for none or where the IFD is damaged, where tifffile ends the chain; tifffile reads it only in
    the main chain, and writers chain sub-IFDs too). Reads the IFD's raw bytes."""
    form, file = tiff.tiff, tiff.filehandle
    file.seek(offset)
    head = file.read(form.tagnosize)
    if len(head) < form.tagnosize or (tags := struct.unpack(form.tagnoformat, head)[0]) > _MAX_IFD_TAGS:
        return [], 0
    data = file.read(tags * form.tagsize + form.offsetsize)
    if len(data) < form.offsetsize:
        return [], 0
    entries = data[:min(tags * form.tagsize, len(data) - form.offsetsize)]
    linked = []
    for at in range(0, len(entries) - form.tagsize + 1, form.tagsize):
        code, kind = struct.unpack(form.byteorder + "HH", entries[at:at + 4])
        if code == _SUBIFDS_TAG and kind in _INTEGER_TYPES:
            linked += _sub_directories(tiff, _INTEGER_TYPES[kind], entries[at + 4:at + form.tagsize])
    return linked, struct.unpack(form.offsetformat, data[-form.offsetsize:])[0]


def _sub_directories(tiff: tifffile.TiffFile, item: str, count_value: bytes) -> list[int]:
    """The offsets a SubIFDs tag of ``item`` (a struct code) lists, given the tag's count and
    value fields ``count_value`` (the offsets themselves where they fit, else where they lie), at
    most :data:`MAX_IMAGE_DIRECTORIES` + 1 of them."""
    order, field = tiff.tiff.byteorder, tiff.tiff.tagoffsetthreshold  # value field: 4 bytes, 8 in a BigTIFF
    count = struct.unpack(order + _UNSIGNED[len(count_value) - field], count_value[:-field])[0]
    size = struct.calcsize(item)
    length = min(count, MAX_IMAGE_DIRECTORIES + 1) * size
    if length <= field:
        values = count_value[-field:][:length]
    else:
        tiff.filehandle.seek(struct.unpack(order + _UNSIGNED[field], count_value[-field:])[0])
        values = tiff.filehandle.read(length)
    return list(struct.unpack(f"{order}{len(values) // size}{item}", values[:len(values) // size * size]))
