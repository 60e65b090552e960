"""``python -m cinnamon_pool.cli``: the same as ``cinnamon-pool``."""

import sys

from cinnamon_pool.cli.main import main

sys.exit(main())
