"""The OME-XML of an OME-TIFF, judged before tifffile builds the file's series from it.

tifffile's OME reader (``TiffFile._series_ome``) trusts the XML: it builds a list of as many
entries as the planes the XML declares, opens the files its TiffData elements name, and a range in
a modulo annotation becomes an array. :func:`ome_problem` reads the XML first and refuses what
would cost more than a slide's metadata may: the twenty-fourth attack's 200 KB TIFF whose XML said
``<TiffData IFD="0" PlaneCount="300000000"/>`` cost ~5 GB and 18 s at every open, and one naming a
FIFO as another file of the image blocked a thread for ever.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from xml.etree import ElementTree

import tifffile

#: Characters of OME-XML parsed, at most: an RGB slide's is a few KB, a 60-channel multiplex
#: image's with every plane listed under 2 MB. The tag data bound already limits it; this is the
#: module's own.
MAX_OME_XML_CHARS = 64 << 20
#: Elements an OME-XML description may have ('<' counted before parsing): a slide's has tens, a
#: 60-channel z-stack of 30 with a plane element each a few thousand. 16 million empty elements in
#: 64 MB took 27 CPU-s and 1.5 GB, parsed by this check and again by tifffile (the twenty-fifth attack).
MAX_OME_ELEMENTS = 1 << 20
#: Image elements (each one series tifffile builds) an OME-XML may hold. A slide file holds a few
#: (the slide, its label, its overview); 1,024 leaves room for the fields of a small plate.
MAX_OME_IMAGES = 1_024
#: Planes (2-D images of one channel, z and time point) all Images of an OME-XML may declare, in
#: all the ways tifffile counts them (SizeZ x SizeT x SizeC, TiffData plane counts, the last IFD
#: they reach): tifffile lists each one. A 60-channel multiplex z-stack of 30 has 1,800 planes;
#: 65,536 leaves room for 36 of those, and lists of that many entries cost under a MB.
MAX_OME_PLANES = 65_536
#: Why an OME-TIFF whose XML names other files (which tifffile would open, whatever they are) is refused.
NAMES_FILES = ("names another file as holding part of the image (a multi-file OME-TIFF); slidelabel reads slides "
               "of one file: convert it to one, e.g. bfconvert in.ome.tif out.ome.tif, or "
               "vips tiffsave in.ome.tif out.tif --tile --pyramid")
_DIMENSIONS = frozenset("XYZCT")


class _Refused(Exception):
    """What in the OME-XML is refused, as the message's end."""


def ome_problem(tiff: tifffile.TiffFile) -> str | None:
    """Why the OME-XML of ``tiff`` (its first page's description, when tifffile takes it for one)
    must not be read by tifffile, else None. XML that does not parse is left to tifffile, which
    logs it and reads the file as a plain TIFF."""
    if not tiff.is_ome:
        return None
    xml = tiff.pages.first.description
    if len(xml) > MAX_OME_XML_CHARS:
        return f"has an OME-XML description of {len(xml)} characters, more than the {MAX_OME_XML_CHARS} read"
    if (elements := xml.count("<")) > MAX_OME_ELEMENTS:
        return (f"has an OME-XML description of {elements:,} elements, more than the {MAX_OME_ELEMENTS:,} read; the "
                "file is damaged or made so")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        return ("has an OME-XML description with a DOCTYPE or ENTITY declaration, which OME-XML never has and "
                "whose entities could expand without bound; the file is damaged or made so")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    try:
        _check_modulo(root)
        _check_images(tiff, root)
    except _Refused as refused:
        return f"has OME-XML that {refused}"
    return None


def _children(element: ElementTree.Element, tag: str) -> Iterator[ElementTree.Element]:
    """The children of ``element`` whose tag ends with ``tag`` (any namespace), as tifffile finds them."""
    return (child for child in element if child.tag.endswith(tag))


def _number(element: ElementTree.Element, name: str, default: str | None = None) -> int:
    """Attribute ``name`` of ``element`` as a whole number >= 0, ``default`` when missing."""
    value = element.attrib.get(name, default)
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _Refused(f"gives {element.tag.rpartition('}')[2]} {name}={value!r}, not a whole number") from None
    if number < 0:
        raise _Refused(f"gives {element.tag.rpartition('}')[2]} a negative {name} ({number})")
    return number


def _check_modulo(root: ElementTree.Element) -> None:
    """Refuse a modulo annotation (a range along Z, T or C) tifffile cannot read or would make an
    array of more than :data:`MAX_OME_PLANES` labels of."""
    for structured in _children(root, "StructuredAnnotations"):
        for along in structured.iter():
            if not along.tag[:-1].endswith("Along") or "Start" not in along.attrib:
                continue
            try:
                start, end = float(along.attrib["Start"]), float(along.attrib["End"])
                labels = (end - start) / float(along.attrib.get("Step", 1)) + 1
            except (KeyError, ValueError, ZeroDivisionError):
                raise _Refused("has a modulo range without a number for its Start, End or Step") from None
            if not math.isfinite(labels) or labels > MAX_OME_PLANES:
                raise _Refused(f"has a modulo range of {labels:g} labels, more than the {MAX_OME_PLANES} read")
            if along.attrib.get("Type", "other") not in tifffile.TIFF.AXES_CODES:
                raise _Refused(f"has a modulo range of unknown Type {along.attrib['Type']!r}")


def _check_images(tiff: tifffile.TiffFile, root: ElementTree.Element) -> None:
    """Refuse more Image elements than :data:`MAX_OME_IMAGES`, more planes than
    :data:`MAX_OME_PLANES` in all, or TiffData in other files."""
    images = list(_children(root, "Image"))
    if len(images) > MAX_OME_IMAGES:
        raise _Refused(f"declares {len(images)} images, more than the {MAX_OME_IMAGES} read")
    own_uuid = root.attrib.get("UUID")
    planes = 0
    for image in images:
        for pixels in _children(image, "Pixels"):
            planes += _planes(tiff, pixels, own_uuid)
            if planes > MAX_OME_PLANES:
                raise _Refused(f"declares more than the {MAX_OME_PLANES} image planes read (e.g. SizeZ x SizeT x "
                               "SizeC, or a TiffData PlaneCount); the file is damaged or made to exhaust memory")


def _planes(tiff: tifffile.TiffFile, pixels: ElementTree.Element, own_uuid: str | None) -> int:
    """The most planes tifffile lists for ``pixels`` (a Pixels element), refusing TiffData whose
    UUID is not ``own_uuid`` (the root's: this file) and sizes tifffile cannot read."""
    order = pixels.attrib.get("DimensionOrder", "")
    if len(order) != len(_DIMENSIONS) or set(order) != _DIMENSIONS:
        raise _Refused(f"gives a DimensionOrder of {order[:16]!r}, not one of the five dimensions XYZCT")
    declared = math.prod(_number(pixels, f"Size{axis}") for axis in "ZCT")
    pages: set[int] = set()
    listed = reached = 0
    for data in _children(pixels, "TiffData"):
        for uuid in _children(data, "UUID"):
            if own_uuid is None or uuid.text != own_uuid:
                raise _Refused(NAMES_FILES)
        first = _number(data, "IFD", "0")
        count = _number(data, "PlaneCount", str(_number(data, "NumPlanes", "1" if "IFD" in data.attrib else "0")))
        count = count or len(tiff.pages)  # tifffile takes all the file's pages
        listed, reached = listed + count, max(reached, first + count)
        if max(listed, reached) > MAX_OME_PLANES:
            break
        pages.update(range(first, min(first + count, len(tiff.pages))))
    planes = max(declared, listed, reached)
    if planes <= MAX_OME_PLANES and pages:
        planes = max(planes, _frames(tiff, pixels, pages, declared))
    return planes


def _frames(tiff: tifffile.TiffFile, pixels: ElementTree.Element, pages: set[int], declared: int) -> int:
    """The frames tifffile lists for ``pixels`` after finding its first page among ``pages`` (the
    IFD indexes its TiffData name): all its pixels (SizeX x SizeY x ``declared`` planes) over
    those of that page, counted here for the smallest of them."""
    smallest = min(math.prod(tiff.pages[index].shaped[1:4]) for index in pages)  # depth x length x width
    if not smallest:
        raise _Refused("places an image in a page of no pixels")
    return _number(pixels, "SizeX") * _number(pixels, "SizeY") * declared // smallest

