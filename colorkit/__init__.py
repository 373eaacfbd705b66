"""colorkit: attention-based image colorization for the colorkit course."""

__version__ = "0.1.0"
