"""The pack's example inputs, offered in ComfyUI's input folder.

The shipped SVD workflows name an example reference clip and example target images
(``example_inputs/``, drawn by ``scripts/make_examples.py``; not ``examples/``, a name ComfyUI
serves workflow templates from, which would hide ``workflows/``). ComfyUI's Load Image lists only the
input folder, so when ComfyUI loads the pack each example that the input folder lacks is
copied there. A file of that name already there (the user's, or an earlier copy) is never
replaced; a missing input folder is created; one that cannot be written is logged and
skipped, and the pack loads anyway.
"""
from __future__ import annotations

import logging
import os
import shutil

import folder_paths

log = logging.getLogger(__name__)

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")


def example_names(source_dir: str = EXAMPLES_DIR) -> list[str]:
    """The example files the pack ships (file names, sorted)."""
    if not os.path.isdir(source_dir):
        return []
    return sorted(name for name in os.listdir(source_dir) if os.path.isfile(os.path.join(source_dir, name)))


def _copy_new(source: str, destination: str) -> bool:
    """Copies ``source`` to ``destination`` only if nothing is there (exclusive create); True if copied."""
    try:
        target = open(destination, "xb")
    except FileExistsError:
        return False
    try:
        with target, open(source, "rb") as origin:
            shutil.copyfileobj(origin, target)
    except OSError:
        os.remove(destination)                    # ours: created above, so a partial copy is removed
        raise
    return True


def copy_examples(input_dir: str, source_dir: str = EXAMPLES_DIR) -> list[str]:
    """Copies each example that ``input_dir`` lacks into it; returns the names copied.

    Never overwrites: a name that exists there (file, folder or link) is left alone. Errors
    (a read-only or unusable input folder) are logged as warnings, not raised.
    """
    names = example_names(source_dir)
    if not names:
        return []
    try:
        os.makedirs(input_dir, exist_ok=True)
    except OSError as exc:
        log.warning("Motion Inversion: cannot create the input folder %s for the example inputs (%s); "
                    "the shipped workflows will ask for a reference video and image", input_dir, exc)
        return []
    copied = []
    for name in names:
        destination = os.path.join(input_dir, name)
        if os.path.lexists(destination):
            continue
        try:
            if _copy_new(os.path.join(source_dir, name), destination):
                copied.append(name)
        except OSError as exc:
            log.warning("Motion Inversion: could not copy the example %s into %s (%s); it stays in %s",
                        name, input_dir, exc, source_dir)
    if copied:
        log.info("Motion Inversion: copied example inputs used by the shipped workflows into %s: %s "
                 "(files already there are never replaced)", input_dir, ", ".join(copied))
    return copied


def install_examples() -> list[str]:
    """``copy_examples`` into ComfyUI's current input folder (called when the pack loads)."""
    return copy_examples(folder_paths.get_input_directory())
