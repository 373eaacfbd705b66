"""colorkit: attention-based image colorization for the colorkit course."""

__version__ = "0.1.0"

from colorkit.inference import colorize, load  # noqa: E402  (the two calls a user needs first)

__all__ = ["colorize", "load", "__version__"]
