"""GLEAM platform: train, index and serve cross-view geo-localization models on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gleam-platform")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"
