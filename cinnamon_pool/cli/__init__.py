"""``cinnamon-pool``, the operator's command line: ``parser.py`` (the grammar), ``commands.py``
(what each command does), ``render.py`` (what it shows), ``main.py`` (exit codes)."""

from cinnamon_pool.cli.main import main

__all__ = ["main"]
