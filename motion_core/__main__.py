"""Command line: ``python -m motion_core {demo,train-toy,train-toy-wan}``."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def _train_toy(argv: list[str]) -> int:
    from .toy.toytrain import ToyTrainSettings, train_toy
    from .toy.toyworld import MANIFEST_PATH, WEIGHTS_PATH

    parser = argparse.ArgumentParser(prog="python -m motion_core train-toy",
                                     description="Train the toy world's SVD-architecture model (CPU, seeded).")
    for field in dataclasses.fields(ToyTrainSettings):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    parser.add_argument("--out", default=WEIGHTS_PATH, help="weights file to write")
    parser.add_argument("--manifest", default=MANIFEST_PATH, help="manifest JSON to write")
    args = vars(parser.parse_args(argv))
    out, manifest = args.pop("out"), args.pop("manifest")
    train_toy(ToyTrainSettings(**args), out, manifest, command=" ".join(["python -m motion_core train-toy", *argv]))
    return 0


def _train_toy_wan(argv: list[str]) -> int:
    from .toy.wantrain import WanToyTrainSettings, train_toy_wan
    from .toy.wanworld import MANIFEST_PATH, WEIGHTS_PATH

    parser = argparse.ArgumentParser(prog="python -m motion_core train-toy-wan",
                                     description="Train the Wan toy world's text-to-video model (CPU, seeded).")
    for field in dataclasses.fields(WanToyTrainSettings):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    parser.add_argument("--out", default=WEIGHTS_PATH, help="weights file to write")
    parser.add_argument("--manifest", default=MANIFEST_PATH, help="manifest JSON to write")
    args = vars(parser.parse_args(argv))
    out, manifest = args.pop("out"), args.pop("manifest")
    train_toy_wan(WanToyTrainSettings(**args), out, manifest,
                  command=" ".join(["python -m motion_core train-toy-wan", *argv]))
    return 0


def _demo(argv: list[str]) -> int:
    from .toy.demo import main as demo_main

    return demo_main(argv)


COMMANDS = {"train-toy": _train_toy, "train-toy-wan": _train_toy_wan, "demo": _demo}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: python -m motion_core {{{','.join(COMMANDS)}}} [options]\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
