"""Lease tokens and the form Redis keeps of them: nothing in Redis opens a browser.

A lease token is ``epoch:generation:secret``. The acquirer makes the secret and sends Redis
only its digest (the first 16 hex digits of its SHA-256), so the lease scripts compose, store,
compare and publish ``epoch:generation:digest``, the token's *fingerprint*. The grant comes back
with the fingerprint, and only the acquirer, who kept the secret, can turn it into the token
(:func:`claim`). Whoever reads the pool's keys, its event stream or a waiter's wake list learns
fingerprints; the gateway fingerprints the bearer it is shown and compares that, so a value read
from Redis used as a bearer gets 403.

Renew and release are scripts that carry the fingerprint: running a script needs write access to
the pool's keys, which already allows ending any lease. Fingerprints have the token's shape, so
every decoder and log that checks one checks the other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cinnamon_pool.errors import InvalidIdentifier
from cinnamon_pool.model import validate_token

SECRET_HEX = 16  # the secret part: 64 random bits, as the epoch


def new_secret() -> str:
    return secrets.token_hex(SECRET_HEX // 2)


def secret_digest(secret: str) -> str:
    """What Redis is told of an acquirer's secret (acquire.lua's ``random``)."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()[:SECRET_HEX]


def fingerprint(token: str) -> str:
    """The form of ``token`` that Redis keeps, publishes and compares."""
    epoch, generation, secret = validate_token(token).split(":")
    return f"{epoch}:{generation}:{secret_digest(secret)}"


def claim(granted: str, secret: str) -> str:
    """The token of a grant (which carries its fingerprint) made for the holder of ``secret``.

    Raises :class:`InvalidIdentifier` when the grant was not made for that secret: a grant pushed
    to a waiter's wake list by someone else, which the acquirer must not take for its own."""
    epoch, generation, digest = validate_token(granted).split(":")
    if not hmac.compare_digest(digest, secret_digest(secret)):
        raise InvalidIdentifier("lease grant", f"{epoch}:{generation}:{digest}", "was not made for this acquirer's secret")
    return f"{epoch}:{generation}:{secret}"


def derived_secret(key: bytes, purpose: str) -> str:
    """A secret that the holder of ``key`` can make again after a restart (a gateway's sessions
    on connect keep only ``purpose``, a random nonce, in Redis)."""
    return hmac.new(key, purpose.encode("utf-8"), hashlib.sha256).hexdigest()[:SECRET_HEX]
