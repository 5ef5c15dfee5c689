"""``python -m resolwe_storage.cli``: the command line, as ``resolwe-storage``."""

import sys

from resolwe_storage.cli import main

sys.exit(main())
