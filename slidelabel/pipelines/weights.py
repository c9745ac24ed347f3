"""Where published model weights are found on this machine; nothing is ever downloaded.

A model's weights folder is the one passed in, else ``$SLIDELABEL_MODELS/<name>/``, else
``$SLIDELABEL_CACHE/models/<name>/`` (``~/.cache/slidelabel/models/<name>/``), else a Hugging Face
cache snapshot of its published repository. The foundation encoders
(:mod:`slidelabel.pipelines.features.foundation`) and Segment Anything
(:mod:`slidelabel.pipelines.sam`) look the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from slidelabel.errors import ParameterError
from slidelabel.settings import Settings

MODELS_ENV = "SLIDELABEL_MODELS"


class PublishedWeights(Protocol):
    """What the lookup needs to know of a model: its folder name, its Hugging Face repository,
    the files that must all be there (``config_files``) and those of which one must be
    (``weight_files``), and whether the repository asks for a licence to be accepted."""

    @property
    def name(self) -> str: ...
    @property
    def repo_id(self) -> str: ...
    @property
    def config_files(self) -> tuple[str, ...]: ...
    @property
    def weight_files(self) -> tuple[str, ...]: ...
    @property
    def gated(self) -> bool: ...


def has_weights(model: PublishedWeights, folder: Path) -> bool:
    """Whether ``folder`` holds every config file of ``model`` and one of its weight files."""
    return all((folder / f).is_file() for f in model.config_files) and any(
        (folder / f).is_file() for f in model.weight_files)


def hf_snapshot(model: PublishedWeights) -> Path | None:
    """The Hugging Face cache's snapshot of the model's repository, if one holds its weights."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for file in model.weight_files:
        cached = try_to_load_from_cache(model.repo_id, file)
        if isinstance(cached, str) and has_weights(model, Path(cached).parent):
            return Path(cached).parent
    return None


def default_folders(name: str) -> list[Path]:
    """``$SLIDELABEL_MODELS/<name>`` (when set) and ``$SLIDELABEL_CACHE/models/<name>``
    (:class:`~slidelabel.settings.Settings` ``models`` and ``cache``)."""
    settings = Settings()
    return ([settings.models / name] if settings.models else []) + [settings.cache / "models" / name]


def find_weights(model: PublishedWeights, weights_dir: Path | None = None, *, kind: str, setting: str = "") -> Path:
    """The folder holding ``model``'s weights: ``weights_dir`` if given, else the first of
    :func:`default_folders` and a Hugging Face cache snapshot that has them.

    :class:`ParameterError` saying where to put which files if none has; ``kind`` names the model
    in it ("foundation model"), ``setting`` the environment variable that names a folder, if any.
    """
    folders = [Path(weights_dir)] if weights_dir is not None else default_folders(model.name)
    for folder in folders:
        if has_weights(model, folder):
            return folder
    snapshot = hf_snapshot(model) if weights_dir is None else None
    if snapshot is not None:
        return snapshot
    files = " and ".join([*model.config_files, " or ".join(model.weight_files)])
    where = ", ".join(map(str, folders))
    where += "" if weights_dir is not None else f" or the Hugging Face cache of {model.repo_id}"
    access = (f"accept its licence at https://huggingface.co/{model.repo_id} and log in (`hf auth login`), then "
              if model.gated else "")
    also = f", set {setting} to its folder" if setting else ""
    raise ParameterError(
        f"no weights for {kind} {model.name!r}: expected {files} in {where}. To get them, "
        f"{access}run `hf download {model.repo_id} --local-dir {folders[-1]}` (`huggingface-cli download` "
        f"in older huggingface_hub){also}, or set {MODELS_ENV} to a folder holding {model.name}/."
    )
