"""``python -m tests.soak``: see tests/soak/__init__.py."""

import sys

from tests.soak.cli import main

sys.exit(main())
