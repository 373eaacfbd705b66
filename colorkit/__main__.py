"""The colorkit command line.

    python -m colorkit colorize CHECKPOINT INPUT OUTPUT [--hint Y,X,#RRGGBB ...] [--device D] [--file KEY=PATH]
    python -m colorkit course [--preset P] [--device D] [--data DIR] [--only 00 02]
    python -m colorkit data {prepare,info} [--json]       # the photo corpus
    python -m colorkit data {fetch NAME,list}             # datasets from the internet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_hint(text: str) -> tuple[int, int, tuple[int, int, int]]:
    """'12,40,#ff8800' -> (12, 40, (255, 136, 0)); `colorkit.inference.parse_hint` as an argparse type."""
    from colorkit.inference import parse_hint as parse

    try:
        return parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def colorize_file(checkpoint: str, source: str, target: str, hints, device: str, files: dict | None = None) -> None:
    """Read `source` (as displayed: EXIF orientation, alpha onto white, 16-bit gray at its depth),
    colorize it and write `target` atomically (a temporary file renamed: never a truncated file, and
    `source` survives when it is also `target`)."""
    from colorkit.inference import colorize, load, read_image, save_image
    from colorkit.runs import resolve_device

    from PIL import Image

    if Image.registered_extensions().get(Path(target).suffix.lower()) is None:   # before any work
        raise ValueError(f"cannot write {target}: unknown image extension {Path(target).suffix!r} (use .png, .jpg, ...)")
    model = load(checkpoint, device=resolve_device(device), files=files)
    image = read_image(source)
    rgb = colorize(model, image, hints=hints or None)
    save_image(rgb, target)
    print(f"wrote {target} ({rgb.shape[1]} x {rgb.shape[0]}) with {type(model).__name__} from {checkpoint}")


def parse_file(text: str) -> tuple[str, str]:
    """'global_path=net.pt' -> ('global_path', 'net.pt'): a network file a model needs, named by the user."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"--file is KEY=PATH (e.g. global_path=inception.pt), got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    from colorkit import course

    parser = argparse.ArgumentParser(prog="python -m colorkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_color = sub.add_parser("colorize", help="colorize an image with a trained checkpoint")
    p_color.add_argument("checkpoint")
    p_color.add_argument("input")
    p_color.add_argument("output")
    p_color.add_argument("--hint", type=parse_hint, action="append", default=[], metavar="Y,X,#RRGGBB",
                         help="a color hint at pixel (Y, X) of the input; repeat for more")
    p_color.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, mps")
    p_color.add_argument("--file", type=parse_file, action="append", default=[], metavar="KEY=PATH",
                         help="a network file the model needs (e.g. Lakhani's global_path=net.pt); a checkpoint "
                              "never names it for you")
    course.add_run_arguments(sub.add_parser("course", help="run every notebook with papermill; results in runs/"))
    sub.add_parser("data", help="data: prepare / info (the photo corpus), fetch NAME / list (datasets from the internet)", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        from colorkit import corpus, fetch

        return fetch.main(argv[1:]) if argv[1:2] in (["fetch"], ["list"]) else corpus.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "colorize":
        try:
            colorize_file(args.checkpoint, args.input, args.output, args.hint, args.device, dict(args.file))
        except (ValueError, TypeError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    return course.run_from_arguments(args)


if __name__ == "__main__":
    sys.exit(main())
