"""The colorkit command line.

    python -m colorkit colorize CHECKPOINT INPUT OUTPUT [--hint Y,X,#RRGGBB ...] [--device D]
    python -m colorkit course [--preset P] [--device D] [--data DIR] [--only 00 02]
"""

from __future__ import annotations

import argparse
import sys


def parse_hint(text: str) -> tuple[int, int, tuple[int, int, int]]:
    """'12,40,#ff8800' -> (12, 40, (255, 136, 0)); `colorkit.inference.parse_hint` as an argparse type."""
    from colorkit.inference import parse_hint as parse

    try:
        return parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def colorize_file(checkpoint: str, source: str, target: str, hints, device: str) -> None:
    import numpy as np
    from PIL import Image

    from colorkit.inference import colorize, load
    from colorkit.runs import resolve_device

    model = load(checkpoint, device=resolve_device(device))
    try:
        with Image.open(source) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except FileNotFoundError:
        raise SystemExit(f"error: input image {source} does not exist") from None
    except OSError as err:
        raise SystemExit(f"error: cannot read {source} as an image: {err}") from None
    rgb = colorize(model, np.asarray(im), hints=hints or None)
    Image.fromarray(rgb).save(target)
    print(f"wrote {target} ({rgb.shape[1]} x {rgb.shape[0]}) with {type(model).__name__} from {checkpoint}")


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
    course.add_run_arguments(sub.add_parser("course", help="run every notebook with papermill; results in runs/"))
    args = parser.parse_args(argv)
    if args.command == "colorize":
        try:
            colorize_file(args.checkpoint, args.input, args.output, args.hint, args.device)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    return course.run_from_arguments(args)


if __name__ == "__main__":
    sys.exit(main())
