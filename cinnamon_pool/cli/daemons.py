"""The daemon commands: each builds its daemon from its own package and runs it."""

from __future__ import annotations

import argparse

from cinnamon_pool.cli.commands import config_of
from cinnamon_pool.dashboard import server as dashboard_server
from cinnamon_pool.gateway import server as gateway_server
from cinnamon_pool.supervisor import app as supervisor_app


def supervise(args: argparse.Namespace) -> int:
    return supervisor_app.run(config_of(args))


def gateway(args: argparse.Namespace) -> int:
    return gateway_server.run(config_of(args))


def dashboard(args: argparse.Namespace) -> int:
    return dashboard_server.run(config_of(args))
