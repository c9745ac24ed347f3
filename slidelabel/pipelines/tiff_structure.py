"""The structure of a TIFF-based slide file, read from its raw image directories before any reader
walks them: a file misnamed .ndpi, image directories (IFDs) that loop back, or more of them or of
their tags' data than a slide has, walked as large_image's tifftools reads them (every IFD-pointer
tag, each IFD once per path to it: :func:`structure_problem`). Reads no page beyond the first, so a
file of a million images or of one that lists itself as its own sub-image costs milliseconds, not minutes."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import tifffile

from slidelabel.pipelines.ome_xml import ome_problem

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


#: Image directories (IFDs) a slide file may have, counted each time a reader reads one, before
#: tifffile builds a page for each. A whole-slide image has a few dozen: an SVS 4-8 (levels, thumbnail,
#: label, macro), an NDPI 5-10, an RGB pyramidal OME-TIFF one image and ~10 sub-resolutions; 1,024
#: leaves room for a stack of a hundred planes of that pyramid. The twenty-third attack: a chain of
#: 100,000 16 x 16 px images (11 MB) took 22 s of checks and 1.6 GB, then minutes in large_image's
#: reader, which steps libtiff to each image in turn (quadratic). The twenty-fourth: large_image's
#: tifftools reads an IFD once for each path to it, so sub-images listed twice at each of 12 levels
#: are 8,191 reads (2^n at n levels) though no IFD loops.
MAX_IMAGE_DIRECTORIES = 1_024
#: Tag entries read, summed over IFD reads: tifftools keeps a dict of each (~0.5 KB). An IFD of a
#: slide has 15-40 tags: 64 for each of :data:`MAX_IMAGE_DIRECTORIES` reads is ~35 MB at most.
MAX_TAG_ENTRIES = MAX_IMAGE_DIRECTORIES * 64
#: Numbers in tags of the packed types (all but ASCII and UNDEFINED), summed over IFD reads:
#: tifftools unpacks each into a Python int or float (~36 bytes: the twenty-fourth attack, a BYTE
#: tag of 100 MB would be 3.6 GB). A 300,000 px square slide of 256 px tiles has 1.4 M tiles a
#: level, an offset and a byte count each, ~3.7 M in a pyramid (x 1.33); 2^23 = 8.4 M is ~300 MB.
MAX_TAG_VALUES = 2**23
#: Bytes of ASCII and UNDEFINED tags, summed over IFD reads (tifftools keeps each whole): a
#: slide's OME-XML, ICC profile or XMP is KBs to a few MB.
MAX_TAG_BYTES = 64 * 2**20
#: Tags whose values tifftools reads as IFD offsets in any IFD, each the first of a chain of next
#: IFDs: SubIFDs, GlobalParametersIFD, EXIF, GPS, Interoperability; and any tag of type IFD (13) or IFD8 (18).
_IFD_TAGS = {330, 400, 34665, 34853, 40965}
_IFD_TYPES = {13, 18}
#: struct codes of the TIFF types by type number, as tifftools unpacks them (None: kept as bytes).
_TYPES = {1: "B", 2: None, 3: "H", 4: "I", 5: "II", 6: "b", 7: None, 8: "h", 9: "i", 10: "ii", 11: "f", 12: "d",
          13: "I", 16: "Q", 17: "q", 18: "Q"}
#: struct codes of a tag's count and offset fields, by their size in bytes.
_UNSIGNED = {4: "I", 8: "Q"}
#: Why a file whose image directories lead back to one already read is refused.
LOOPED_DIRECTORIES = ("cannot be read: its image directories loop back (an image lists one already read as its next "
                      "image or sub-image), so a reader would read them for ever; the file is damaged or made so")
_TOO_MANY = (f"has more than {MAX_IMAGE_DIRECTORIES:,} images (image directories, sub-images included, counted each "
             "time one is listed); a slide has a few dozen: convert it to a pyramidal TIFF of one slide, e.g. "
             "vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg")

#: tifffile's formats whose metadata its ``series`` reads as given, none a slide format slidelabel
#: reads by them: their files are read as plain pages. Micro-Manager's index map and Leica SCN's
#: XML declare frames that tifffile lists, one entry each (a 566-byte file: 4.45 GB; a 197 KB SCN:
#: 2.2 GB, the twenty-fifth attack); SCN slides are read by OpenSlide, not by these series. OME-XML,
#: read by slidelabel, is held to its bounds first (:mod:`slidelabel.pipelines.ome_xml`).
PLAIN_FORMATS = frozenset(tifffile.TIFF.FILE_FLAGS) - {
    "svs", "ndpi", "ome", "philips", "bif", "shaped", "imagej", "subifd", "uniform", "multipage", "frame",
    "volumetric", "tiffep", "dng", "virtual"}

#: Why an NDPI under 4 GB whose next-IFD pointer needs its upper 4 bytes is refused: tifffile reads
#: an NDPI's next pointers as 8 bytes, large_image's tifftools below 4 GB as 4, so the two walk
#: different chains (a sub-image whose next pointer is itself in its lower 4 bytes, 1 in its upper
#: 4, passed the walk and looped tifftools to 6.5 GB: the twenty-fifth attack).
_SPLIT_POINTER = ("cannot be read: an image directory's next pointer needs more than 4 bytes in an NDPI file under "
                  "4 GB, where readers differ on its size: the file is damaged or made so")

#: The bytes a TIFF starts with (classic and BigTIFF, either byte order).
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def unparsed_problem(file: BinaryIO, error: Exception) -> str | None:
    """Why a file tifffile could not parse (``error``) is refused: one that starts as a TIFF, whose
    structure is then damaged (readers that walk it anyway may loop: an NDPI whose first directory
    tifffile could not read passed every check, and tifftools looped on it to 6.5 GB, the
    twenty-fifth attack); None for a file of another format, which its readers judge."""
    file.seek(0)
    if file.read(4) not in TIFF_MAGIC:
        return None
    return f"cannot be read: it starts as a TIFF, but its structure is damaged ({str(error)[:200]})"


def open_tiff_file(file: str | Path | BinaryIO) -> tifffile.TiffFile:
    """``tifffile.TiffFile`` of ``file`` (a path, or an open file it leaves open), the formats of
    :data:`PLAIN_FORMATS` read as plain pages (tifffile raises what it raises for no TIFF)."""
    return tifffile.TiffFile(file, **{f"is_{name}": False for name in PLAIN_FORMATS})


def structure_problem(tiff: tifffile.TiffFile) -> str | None:
    """Why the structure of ``tiff`` cannot be read (a misnamed NDPI, image directories that loop
    back, are read too many times or whose tags hold too much, a first description longer than
    readers parse, OME-XML past :func:`~slidelabel.pipelines.ome_xml.ome_problem`'s bounds), else
    None; reads no page beyond the first. Every opener of a slide's TIFF asks it before
    ``tiff.series``, which reads what the metadata declares."""
    if _misnamed_ndpi(tiff):
        return NOT_NDPI
    try:
        first = tiff.pages.first
    except IndexError:  # no image read (a truncated file): the other checks say what is wrong
        return None
    return _Walk(tiff).problem(first.offset) or _description_problem(first.description) or ome_problem(tiff)


#: Characters of the first image's description, which tifffile's series parse whole as XML (OME,
#: Philips) or JSON (its own shaped files): a slide's takes a few KB to a few MB. Markup in it
#: ('<', '[', '{') is held to :data:`MAX_DESCRIPTION_MARKUP`: a 60 MB Philips XML of 15 M empty
#: elements took 4.5 GB at each open, a 60 MB shaped JSON of empty lists 2.4 GB (the twenty-sixth
#: attack).
MAX_DESCRIPTION_CHARS = 16 << 20
MAX_DESCRIPTION_MARKUP = 1 << 20


def _description_problem(description: str) -> str | None:
    """Why the first image's ``description`` is more than a reader may parse, else None."""
    if len(description) > MAX_DESCRIPTION_CHARS:
        return (f"has an image description of {len(description):,} characters, more than the "
                f"{MAX_DESCRIPTION_CHARS:,} read; the file is damaged or made so")
    if (markup := sum(description.count(mark) for mark in "<[{")) > MAX_DESCRIPTION_MARKUP:
        return (f"has an image description of {markup:,} elements or lists, more than the "
                f"{MAX_DESCRIPTION_MARKUP:,} read; the file is damaged or made so")
    return None


class _Walk:
    """Walks the IFDs of a TIFF as large_image's tifftools reads them (each tag of :data:`_IFD_TAGS`
    or :data:`_IFD_TYPES` of each IFD read lists chains of IFDs, read before the IFD's own next one;
    a chain ends at a next IFD of 0, outside the file, or the one its tag lists next), counting
    reads, tag entries and tag data against the bounds."""

    def __init__(self, tiff: tifffile.TiffFile) -> None:
        self.tiff, self.form, self.file = tiff, tiff.tiff, tiff.filehandle
        self.reads = self.entries = self.values = self.bytes = 0

    def problem(self, first: int) -> str | None:
        """Why the IFDs from the one at byte ``first`` cannot be read, else None. One met again on
        the way to it loops, as does one of the main chain read before anywhere (as tifffile reads)."""
        path: list[int] = []
        read: set[int] = set()
        chains = [[[first], 0, first, 0]]  # a tag's IFD offsets, the one chained, the next IFD, len(path) then
        while chains:
            offsets, index, at, base = chain = chains[-1]
            if not 8 <= at <= self.file.size - 6:  # as tifftools' check_offset: the chain ends
                del path[base:]
                if index + 1 >= len(offsets):
                    chains.pop()
                else:
                    chain[1:3] = index + 1, offsets[index + 1]
                continue
            if at in path or (len(chains) == 1 and at in read):
                return LOOPED_DIRECTORIES
            self.reads += 1
            if self.reads > MAX_IMAGE_DIRECTORIES:
                return _TOO_MANY
            path.append(at)
            read.add(at)
            if isinstance(directory := self._directory(at), str):
                return directory
            links, next_at = directory
            chain[2] = 0 if index + 1 < len(offsets) and next_at == offsets[index + 1] else next_at
            chains.extend([linked, 0, linked[0] if linked else 0, len(path)] for linked in reversed(links))
        return None

    def _directory(self, offset: int) -> tuple[list[list[int]], int] | str:
        """The IFD offsets each IFD-pointer tag of the IFD at byte ``offset`` lists, and the offset
        of its next IFD (0: none); or why it is refused. Reads its raw bytes and those tags' values."""
        form = self.form
        self.file.seek(offset)
        head = self.file.read(form.tagnosize)
        tags = struct.unpack(form.tagnoformat, head)[0] if len(head) == form.tagnosize else 0
        self.entries += tags
        if self.entries > MAX_TAG_ENTRIES:
            return (f"cannot be read: its image directories list more than {MAX_TAG_ENTRIES:,} tags (counted each "
                    "time one is listed), a slide a few hundred: the file is damaged or made so")
        data = self.file.read(tags * form.tagsize + form.offsetsize)
        links = []
        for at in range(0, min(tags * form.tagsize, len(data)) - form.tagsize + 1, form.tagsize):
            code, kind = struct.unpack(form.byteorder + "HH", data[at:at + 4])
            offsets = self._tag(kind, data[at + 4:at + form.tagsize], code in _IFD_TAGS or kind in _IFD_TYPES)
            if isinstance(offsets, str):
                return offsets
            links += [offsets] * (offsets is not None)
        next_field = data[tags * form.tagsize:]
        next_at = struct.unpack(form.offsetformat, next_field)[0] if len(next_field) == form.offsetsize else 0
        if next_at >> 32 and form.is_ndpi and self.file.size < 1 << 32:
            return _SPLIT_POINTER
        return links, next_at

    def _tag(self, kind: int, count_value: bytes, pointer: bool) -> list[int] | str | None:
        """Counts a tag of type ``kind`` with count and value fields ``count_value`` (skipping one of
        an unknown type or whose data lies outside the file, as tifftools does); returns the IFD
        offsets it lists where it is an IFD ``pointer`` (integers; bytes one by one, as tifftools
        takes them), else None; or why it is refused."""
        order, field = self.form.byteorder, self.form.tagoffsetthreshold  # value field: 4 bytes, 8 in a BigTIFF
        if kind not in _TYPES:
            return None
        item = _TYPES[kind] or "B"
        count = struct.unpack(order + _UNSIGNED[len(count_value) - field], count_value[:-field])[0]
        length = count * struct.calcsize(item)
        at = struct.unpack(order + _UNSIGNED[field], count_value[-field:])[0] if length > field else None
        if at is not None and not 8 <= at <= self.file.size - length:
            return None
        if problem := self._count(len(item) * count if _TYPES[kind] else 0, 0 if _TYPES[kind] else count):
            return problem
        if not pointer:
            return None
        if item in "fd":
            return ("cannot be read: a tag of its image directories lists other directories at offsets that are not "
                    "whole numbers (a reader takes them as they are): the file is damaged or made so")
        if count > MAX_IMAGE_DIRECTORIES:
            return _TOO_MANY
        if at is not None:
            self.file.seek(at)
        values = count_value[-field:][:length] if at is None else self.file.read(length)
        return list(struct.unpack(f"{order}{len(item) * count}{item[0]}", values))

    def _count(self, values: int, text: int) -> str | None:
        """Adds a tag's ``values`` (numbers) and ``text`` (bytes) to the walk's; why past the bounds, else None."""
        self.values, self.bytes = self.values + values, self.bytes + text
        for total, bound, unit in [(self.values, MAX_TAG_VALUES, "values"), (self.bytes, MAX_TAG_BYTES, "bytes")]:
            if total > bound:
                return (f"cannot be read: the tags of its image directories hold {total:,} {unit} (counted each time "
                        f"one is listed), more than the {bound:,} a slide's tags hold, and a reader would hold them "
                        "in memory: the file is damaged or made so")
        return None
