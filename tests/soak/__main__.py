"""``python -m tests.soak``: see tests/soak/__init__.py."""

import sys

from tests.soak.runner import main

sys.exit(main())
