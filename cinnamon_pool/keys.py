"""Every Redis key of a pool, built here and nowhere else.

All keys carry the hash tag ``{pool}`` so a pool lives in one Redis Cluster slot (the lease
scripts derive theirs from the prefix they receive in KEYS, below). The schema, in one place:

  cinnamon:{P}:meta          hash    epoch (random, written once), generation (INCR), ticket_seq
  cinnamon:{P}:containers    hash    name -> ContainerRecord JSON
  cinnamon:{P}:free          zset    name -> ms it became free (oldest free is granted first)
  cinnamon:{P}:leases        hash    name -> lease JSON (token, holder, granted/expires/cap ms)
  cinnamon:{P}:expiries      zset    name -> ms the lease expires (min of TTL and hard cap)
  cinnamon:{P}:last_tokens   hash    name -> token of the last released lease (release twice = no-op)
  cinnamon:{P}:waiters       zset    ticket -> sequence number (FIFO order)
  cinnamon:{P}:waiter_dl     zset    ticket -> ms the ticket dies unless refreshed
  cinnamon:{P}:tickets       hash    ticket -> holder JSON of the waiting acquirer
  cinnamon:{P}:handoffs      hash    ticket -> grant JSON handed over by a release
  cinnamon:{P}:wake:<ticket> list    pushed once when that ticket is granted (BLPOP target)
  cinnamon:{P}:memory        hash    name -> latest memory reading in MB (supervisor, plain data)
  cinnamon:{P}:cpu           hash    name -> CPU use in % of one core over the last tick (supervisor, plain data)
  cinnamon:{P}:tool_calls    hash    name -> recent tool-call figures JSON (its host's gateway, plain data)
  cinnamon:{P}:events        stream  every grant, release, expiry and state change (capped)
  cinnamon:{P}:draining      string  "1" while the pool is drained: no new grants
  cinnamon:{P}:leader:<host> string  the active supervisor of that Docker host (leader election)
  cinnamon:{P}:desired       hash    host -> the number of slots that host serves (set by its leader)
  cinnamon:{P}:hosts         hash    host -> its index k in the pool, in joining order: its slots are k*1000+1 ..
  cinnamon:{P}:growth        string  the host that grew the pool for waiting jobs, for the cool-down (one host grows)
  cinnamon:{P}:size_request:<host> string  `cinnamon-pool scale N`: the size an operator asked for, until that host's leader applies it
  cinnamon:{P}:preparer:<host> string the gateway of that host prepares sessions (expires unless renewed)
  cinnamon:{P}:lease_sessions hash   name -> {"token", "sessions"}: the MCP sessions that lease opened or was handed
  cinnamon:{P}:sessions      hash    "prepared|<name>" / "keeper|<name>" -> MCP session JSON held by the host's
                                     gateway (gateway/prepare.py); taken (HDEL) by exactly one job's initialize
  cinnamon:{P}:api_keys      hash    SHA-256 of an API key -> its record JSON {name, max_sessions, created_ms}
                                     (never the key itself: lease/apikeys.py)
  cinnamon:{P}:api_key_names hash    key name -> the SHA-256 its key hashes to (names are unique)
  cinnamon:{P}:api_key_used  hash    key name -> ms it last opened a session (plain data)
  cinnamon:{P}:connect_sessions hash MCP session id -> the on-connect session JSON {key, container, token,
                                     test_run_id, opened_ms}: which lease a client's session lives on

Every lease script receives two KEYS: the pool's prefix ``cinnamon:{P}:`` and the caller's
host's leader key. ``lease/scripts.py`` generates each script's prelude from :data:`SCRIPT_KEYS`
(``local K_META = KEYS[1] .. 'meta'``), so each name is written once, here. Two keys instead of
one per name cut what every call sends and parses (18 keys cost 35 µs a call, measured); both
carry the hash tag, so a script still touches one Redis Cluster slot, the one its KEYS declare.

The wake and preparer keys are the families a script derives further: release hands a container
to the oldest waiter, whose ticket it only learns inside the script, and asks whether the gateway
of the container's host prepares sessions, a host it learns from the record.
"""

from __future__ import annotations

from dataclasses import dataclass

from cinnamon_pool.model import validate_host, validate_pool_name, validate_ticket

PREFIX = "cinnamon"
EVENTS_CONSUMER_GROUP = "cinnamon-logs"

# (the Lua variable, the PoolKeys attribute): the names every lease script derives from its KEYS.
SCRIPT_KEYS: tuple[tuple[str, str], ...] = (
    ("K_META", "meta"),
    ("K_CONTAINERS", "containers"),
    ("K_FREE", "free"),
    ("K_LEASES", "leases"),
    ("K_EXPIRIES", "expiries"),
    ("K_LAST", "last_tokens"),
    ("K_WAITERS", "waiters"),
    ("K_WAITER_DL", "waiter_deadlines"),
    ("K_TICKETS", "tickets"),
    ("K_HANDOFFS", "handoffs"),
    ("K_WAKE", "wake_prefix"),
    ("K_EVENTS", "events"),
    ("K_DRAINING", "draining"),
    ("K_LEADER", "leader"),  # the caller's host's leader key
    ("K_DESIRED", "desired"),
    ("K_HOSTS", "hosts"),
    ("K_GROWTH", "growth"),
    ("K_PREPARER", "preparer_prefix"),  # + a record's host: that host's gateway prepares sessions
)


@dataclass(frozen=True)
class PoolKeys:
    pool: str

    def __post_init__(self) -> None:
        validate_pool_name(self.pool)

    @property
    def prefix(self) -> str:
        """``cinnamon:{P}:``, the start of every key of the pool (KEYS[1] of the lease scripts)."""
        return f"{PREFIX}:{{{self.pool}}}:"

    def _key(self, name: str) -> str:
        return self.prefix + name

    @property
    def meta(self) -> str:
        return self._key("meta")

    @property
    def containers(self) -> str:
        return self._key("containers")

    @property
    def free(self) -> str:
        return self._key("free")

    @property
    def leases(self) -> str:
        return self._key("leases")

    @property
    def expiries(self) -> str:
        return self._key("expiries")

    @property
    def last_tokens(self) -> str:
        return self._key("last_tokens")

    @property
    def waiters(self) -> str:
        return self._key("waiters")

    @property
    def waiter_deadlines(self) -> str:
        return self._key("waiter_dl")

    @property
    def tickets(self) -> str:
        return self._key("tickets")

    @property
    def handoffs(self) -> str:
        return self._key("handoffs")

    @property
    def wake_prefix(self) -> str:
        return self._key("wake:")

    def wake(self, ticket: str) -> str:
        return self.wake_prefix + validate_ticket(ticket)

    @property
    def memory(self) -> str:
        return self._key("memory")

    @property
    def cpu(self) -> str:
        return self._key("cpu")

    @property
    def tool_calls(self) -> str:
        return self._key("tool_calls")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def draining(self) -> str:
        return self._key("draining")

    def leader(self, host: str) -> str:
        return self._key(f"leader:{validate_host(host)}")

    @property
    def desired(self) -> str:
        return self._key("desired")

    @property
    def hosts(self) -> str:
        return self._key("hosts")

    @property
    def growth(self) -> str:
        return self._key("growth")

    @property
    def durable(self) -> str:
        """Written after each grant, on the granting connection, so WAIT covers the grant."""
        return self._key("durable")

    @property
    def sessions(self) -> str:
        return self._key("sessions")

    @property
    def lease_sessions(self) -> str:
        return self._key("lease_sessions")

    @property
    def api_keys(self) -> str:
        return self._key("api_keys")

    @property
    def api_key_names(self) -> str:
        return self._key("api_key_names")

    @property
    def api_key_used(self) -> str:
        return self._key("api_key_used")

    @property
    def connect_sessions(self) -> str:
        return self._key("connect_sessions")

    @property
    def preparer_prefix(self) -> str:
        return self._key("preparer:")

    def size_request(self, host: str) -> str:
        return self._key(f"size_request:{validate_host(host)}")

    def preparer(self, host: str) -> str:
        return self.preparer_prefix + validate_host(host)

    def script_keys(self, host: str) -> list[str]:
        """KEYS of every lease script: the pool's prefix and the leader key of the caller's host."""
        return [self.prefix, self.leader(host)]

    def all_state_keys(self) -> list[str]:
        """The keys that hold the pool's state (for snapshots, DUMP comparisons and wipes)."""
        return [
            self.meta, self.containers, self.free, self.leases, self.expiries, self.last_tokens,
            self.waiters, self.waiter_deadlines, self.tickets, self.handoffs, self.draining, self.desired, self.hosts,
        ]  # fmt: skip
