"""``python -m resolwe_storage``: the command line, as ``resolwe-storage``."""

from resolwe_storage.cli import entry

entry()
