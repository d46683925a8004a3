"""Command line: ``python -m motion_core {demo,train-toy,train-toy-wan,learn-library}``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def _train(argv: list[str], name: str, description: str, settings_class, train, weights: str, manifest: str) -> int:
    """``python -m motion_core NAME``: every field of ``settings_class`` as a flag, then ``train``."""
    parser = argparse.ArgumentParser(prog=f"python -m motion_core {name}", description=description)
    for field in dataclasses.fields(settings_class):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    parser.add_argument("--out", default=weights, help="weights file to write")
    parser.add_argument("--manifest", default=manifest, help="manifest JSON to write")
    args = vars(parser.parse_args(argv))
    out, manifest = args.pop("out"), args.pop("manifest")
    train(settings_class(**args), out, manifest, command=" ".join([f"python -m motion_core {name}", *argv]))
    return 0


def _train_toy(argv: list[str]) -> int:
    from .toy.toytrain import ToyTrainSettings, train_toy
    from .toy.toyworld import MANIFEST_PATH, WEIGHTS_PATH

    return _train(argv, "train-toy", "Train the toy world's SVD-architecture model (CPU, seeded).",
                  ToyTrainSettings, train_toy, WEIGHTS_PATH, MANIFEST_PATH)


def _train_toy_wan(argv: list[str]) -> int:
    from .toy.wantrain import WanToyTrainSettings, train_toy_wan
    from .toy.wanworld import MANIFEST_PATH, WEIGHTS_PATH

    return _train(argv, "train-toy-wan", "Train the Wan toy world's text-to-video model (CPU, seeded).",
                  WanToyTrainSettings, train_toy_wan, WEIGHTS_PATH, MANIFEST_PATH)


def _demo(argv: list[str]) -> int:
    from .toy.demo import main as demo_main

    return demo_main(argv)


def _learn_library(argv: list[str]) -> int:
    from .learn_library import main as library_main

    return library_main(argv)


COMMANDS = {"train-toy": _train_toy, "train-toy-wan": _train_toy_wan, "demo": _demo, "learn-library": _learn_library}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: python -m motion_core {{{','.join(COMMANDS)}}} [options]\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
