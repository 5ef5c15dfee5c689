"""``python -m resolwe_storage.cli``: the command line, as ``resolwe-storage``."""

from resolwe_storage.cli import entry

entry()
