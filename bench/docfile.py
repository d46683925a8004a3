"""Writing a benchmark's measured block into a hand-written doc without losing the prose.

A benchmark owns only the text between its two markers::

    <!-- bench.quality: written by `python -m bench.quality`; edit outside these markers -->
    ...
    <!-- /bench.quality -->

``replace_section`` swaps that text and keeps everything else in the file (the analysis
written by hand around it). A doc without the markers gets the block appended at its end;
a missing doc is created. The file is replaced atomically, so an interrupted write leaves
the old doc whole.
"""
from __future__ import annotations

import json
import os


def markers(name: str) -> tuple[str, str]:
    """The opening and closing marker lines of section ``name``."""
    return (f"<!-- bench.{name}: written by `python -m bench.{name}`; edit outside these markers -->",
            f"<!-- /bench.{name} -->")


def replace_section(path: str, name: str, body: str) -> None:
    """Put ``body`` between section ``name``'s markers in ``path`` (see the module docstring).

    Raises ValueError when the doc holds an opening marker without its closing one (or the
    other way round, or either twice), rather than guess which text is the benchmark's.
    """
    start, end = markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    counts = text.count(start), text.count(end)
    if counts == (1, 1) and text.index(start) < text.index(end):
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block.rstrip("\n") + tail
    elif counts == (0, 0):
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    else:
        raise ValueError(f"{path}: the markers of section {name!r} are unbalanced ({counts[0]} opening, "
                         f"{counts[1]} closing, or out of order); fix them by hand: {start} ... {end}")
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(partial, path)


def write_json(path: str, payload) -> None:
    """``payload`` as JSON (indent 1) in ``path``, replaced atomically: an interrupted write leaves the old file."""
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(partial, path)
