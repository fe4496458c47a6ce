"""The node's version, from the installed package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("pacs-node")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"
