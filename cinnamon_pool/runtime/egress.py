"""What a pool container may reach: the host's firewall rules for the pool network's bridge.

A page (or any process in a container) reaches the host's own services at the bridge's gateway
address, and through the host the LAN and the cloud metadata address. With
``container.egress = "restricted"`` the supervisor keeps these rules in place (iptables, as the
engine's own DOCKER-USER chain expects):

- ``INPUT``: from the bridge to the host itself, only answers to connections the host opened
  (the gateway's and the probes' way in); ``egress_allow`` entries are let through first;
- ``DOCKER-USER``: from the bridge to the private ranges, link-local (169.254.0.0/16, cloud
  metadata) and CGNAT, refused unless in ``egress_allow``; the internet stays reachable.

Every rule carries the comment ``cinnamon-egress:<network>``, so applying again replaces them
and a network that is gone loses them (:func:`sweep`). It needs root in the host's network
namespace; where that is missing, :class:`EgressUnenforced` says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence

from cinnamon_pool.errors import CinnamonError

BLOCKED = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
PREFIX = "cinnamon-egress:"
CHAINS = ("INPUT", "DOCKER-USER")
LOCK_PATH = "/run/lock/cinnamon-pool-egress.lock" if os.path.isdir("/run/lock") else "/tmp/cinnamon-pool-egress.lock"

Run = Callable[[Sequence[str]], str]


class EgressUnenforced(CinnamonError):
    """The host's firewall cannot be changed from here (not root, no iptables, another netns)."""


def _iptables(args: Sequence[str]) -> str:
    try:
        done = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EgressUnenforced(f"iptables {' '.join(args)}: {error}") from error
    if done.returncode != 0:
        raise EgressUnenforced(f"iptables {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def rules(network: str, bridge: str, allow: Iterable[str]) -> list[tuple[str, list[str]]]:
    """(chain, rule) in the order they must take at the top of each chain."""
    tag = ["-m", "comment", "--comment", PREFIX + network]
    fresh = ["-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED"]
    allowed = list(allow)
    ordered: list[tuple[str, list[str]]] = []
    for cidr in allowed:
        ordered.append(("INPUT", ["-i", bridge, "-d", cidr, *tag, "-j", "ACCEPT"]))
        ordered.append(("DOCKER-USER", ["-i", bridge, "-d", cidr, *tag, "-j", "RETURN"]))
    ordered.append(("INPUT", ["-i", bridge, *fresh, *tag, "-j", "REJECT"]))
    for cidr in BLOCKED:
        ordered.append(("DOCKER-USER", ["-i", bridge, "-d", cidr, *fresh, *tag, "-j", "REJECT"]))
    return ordered


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """One change of the rules at a time on this host. Supervisors of several pool hosts on one
    engine (threads or processes) apply theirs at once, and the remove-then-insert of one must
    not interleave with another's (a rule one listed and another deleted: "Bad rule")."""
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enforce(network: str, bridge: str, allow: Iterable[str], networks: Iterable[str], run: Run = _iptables) -> None:
    """The rules of every network gone from ``networks`` removed, and those of ``network`` put in
    place, as one change on this host."""
    with _host_lock():
        _sweep(networks, run)
        _apply(network, bridge, allow, run)


def apply(network: str, bridge: str, allow: Iterable[str], run: Run = _iptables) -> None:
    """Put the rules of ``network`` in place, replacing any it had."""
    with _host_lock():
        _apply(network, bridge, allow, run)


def _apply(network: str, bridge: str, allow: Iterable[str], run: Run) -> None:
    _remove(network, run)
    position = dict.fromkeys(CHAINS, 1)
    for chain, rule in rules(network, bridge, allow):
        run(["-I", chain, str(position[chain]), *rule])
        position[chain] += 1


def _ours(run: Run) -> list[tuple[str, str, list[str]]]:
    """(chain, network, rule as -S prints it) of every rule this module made."""
    found = []
    for chain in CHAINS:
        for line in run(["-S", chain]).splitlines():
            words = line.split()
            if words[:2] != ["-A", chain] or "--comment" not in words:
                continue
            comment = words[words.index("--comment") + 1].strip('"')
            if comment.startswith(PREFIX):
                found.append((chain, comment.removeprefix(PREFIX), words[2:]))
    return found


def remove(network: str, run: Run = _iptables) -> int:
    """Remove the rules of ``network``; how many there were."""
    with _host_lock():
        return _remove(network, run)


def _remove(network: str, run: Run) -> int:
    removed = 0
    for chain, owner, rule in _ours(run):
        if owner == network:
            run(["-D", chain, *[word.strip('"') for word in rule]])
            removed += 1
    return removed


def sweep(networks: Iterable[str], run: Run = _iptables) -> int:
    """Remove the rules of every network not in ``networks`` (the ones that still exist)."""
    with _host_lock():
        return _sweep(networks, run)


def _sweep(networks: Iterable[str], run: Run) -> int:
    alive = set(networks)
    gone = {owner for _chain, owner, _rule in _ours(run) if owner not in alive}
    return sum(_remove(owner, run) for owner in gone)
