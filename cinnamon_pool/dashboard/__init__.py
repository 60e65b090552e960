"""The web dashboard (``cinnamon-pool dashboard``): see ``dashboard/app.py``."""
