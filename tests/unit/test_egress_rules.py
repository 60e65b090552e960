"""The firewall rules of container.egress, built and replaced without touching the host."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from cinnamon_pool.runtime import egress


class FakeIptables:
    """Chains as lists of rules, answering -S, -I and -D as iptables does."""

    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {"INPUT": ["-j ACCEPT-ALL-OTHERS"], "DOCKER-USER": ["-j RETURN"]}

    def __call__(self, args: Sequence[str]) -> str:
        verb, chain, *rest = args
        if verb == "-S":
            return "".join(f"-A {chain} {rule}\n" for rule in self.chains[chain])
        if verb == "-I":
            self.chains[chain].insert(int(rest[0]) - 1, " ".join(f'"{w}"' if w.startswith("cinnamon-egress:") else w for w in rest[1:]))
            return ""
        if verb == "-D":
            shown = " ".join(f'"{w}"' if w.startswith("cinnamon-egress:") else w for w in rest)
            self.chains[chain].remove(shown)
            return ""
        raise AssertionError(args)


def test_allowed_ranges_come_before_the_refusals_and_everything_else_keeps_its_place() -> None:
    tables = FakeIptables()
    egress.apply("pool-net", "br-1", ["10.1.2.0/24"], tables)
    docker_user = tables.chains["DOCKER-USER"]
    assert docker_user[0].endswith("-j RETURN") and "-d 10.1.2.0/24" in docker_user[0], "the allowed range first"
    assert [r for r in docker_user if "-j REJECT" in r and "-i br-1" in r and "! --ctstate ESTABLISHED,RELATED" in r][0:5] == docker_user[
        1:6
    ]
    assert {r.split("-d ")[1].split()[0] for r in docker_user[1:6]} == set(egress.BLOCKED)
    assert docker_user[-1] == "-j RETURN", "the engine's own rule stays last"
    assert tables.chains["INPUT"][:2] == [
        '-i br-1 -d 10.1.2.0/24 -m comment --comment "cinnamon-egress:pool-net" -j ACCEPT',
        '-i br-1 -m conntrack ! --ctstate ESTABLISHED,RELATED -m comment --comment "cinnamon-egress:pool-net" -j REJECT',
    ]


def test_applying_again_replaces_and_a_gone_network_loses_its_rules_only() -> None:
    tables = FakeIptables()
    egress.apply("pool-net", "br-1", ["10.1.2.0/24"], tables)
    egress.apply("pool-net", "br-1", [], tables)
    egress.apply("other-net", "br-2", [], tables)
    assert sum("pool-net" in r for rules in tables.chains.values() for r in rules) == 1 + len(egress.BLOCKED), "replaced, not added"
    assert egress.sweep(["other-net"], tables) == 1 + len(egress.BLOCKED)
    assert not [r for rules in tables.chains.values() for r in rules if "pool-net" in r]
    assert sum("other-net" in r for rules in tables.chains.values() for r in rules) == 1 + len(egress.BLOCKED)
    assert tables.chains["INPUT"][-1] == "-j ACCEPT-ALL-OTHERS"


class SlowIptables(FakeIptables):
    """Each command takes a moment, as the real one does (another thread runs meanwhile); -D of
    a rule that is not there fails, as iptables' "Bad rule" does."""

    def __call__(self, args: Sequence[str]) -> str:
        time.sleep(0.001)
        try:
            return super().__call__(args)
        except ValueError:
            raise egress.EgressUnenforced(f"iptables {' '.join(args)}: Bad rule (does a matching rule exist in that chain?)") from None


def test_supervisors_that_apply_the_same_networks_rules_at_once_do_not_trip_over_each_other() -> None:
    """Three hosts' supervisors on one engine share the pool network (the scale bench's 3 hosts
    failed one container start on "Bad rule" before the rules were changed under a host lock)."""
    tables = SlowIptables()
    failures: list[BaseException] = []

    def supervisor() -> None:
        try:
            for _ in range(5):
                egress.enforce("pool-net", "br-1", [], ["pool-net"], tables)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=supervisor) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum("pool-net" in r for rules in tables.chains.values() for r in rules) == 1 + len(egress.BLOCKED), "one set of rules"
