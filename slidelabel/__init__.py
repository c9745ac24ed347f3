"""slidelabel: active-learning labelling of whole-slide pathology images by superpixels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slidelabel")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
