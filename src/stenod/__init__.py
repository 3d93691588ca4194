"""stenod: a production speech-to-text service built on Whisper models."""

from stenod._version import __version__

__all__ = ["__version__"]
