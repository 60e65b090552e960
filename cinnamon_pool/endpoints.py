"""Which endpoints a holder may send its lease token to.

A grant comes from Redis, and whoever can write to Redis can forge one (or push it to a waiter's
``wake:<ticket>`` key) and point a job at any URL, token and all. So the job side, and a gateway
forwarding a session on connect, accept an endpoint only under a gateway URL the configuration
trusts: ``gateway.trusted_urls``, by default this configuration's own gateway URL (a pool of
several hosts lists every host's ``advertise_url``). Without a gateway (``gateway.listen = ""``)
the containers' own loopback URLs on this host are trusted instead. Away from loopback the URL
must be https, unless ``gateway.allow_plain_http``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import UntrustedEndpoint


def trusted_bases(config: PoolConfig) -> tuple[str, ...]:
    gateway = config.gateway
    if gateway.trusted_urls:
        return tuple(url.rstrip("/") for url in gateway.trusted_urls)
    return (gateway.base_url,) if gateway.enabled else ()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint(config: PoolConfig, endpoint: str) -> str:
    """``endpoint``, or :class:`UntrustedEndpoint` naming it and what is trusted."""
    url = urlsplit(endpoint)
    try:
        where = (url.scheme, url.hostname, url.port)
    except ValueError:
        raise UntrustedEndpoint(endpoint, "has no valid port") from None
    bases = trusted_bases(config)
    under = any(
        where == (trusted.scheme, trusted.hostname, trusted.port) and url.path.startswith(trusted.path.rstrip("/") + "/")
        for trusted in map(urlsplit, bases)
    )
    direct = not config.gateway.enabled and is_loopback(url.hostname or "") and url.port in config.container.host_ports
    if not under and not (direct and url.path == "/mcp"):  # direct mode: a container's own published port on this host
        what = ", ".join(bases) if bases else f"the containers' own URLs (127.0.0.1, ports {config.container.host_port_range})"
        raise UntrustedEndpoint(endpoint, f"is not under a trusted gateway URL ({what}; see gateway.trusted_urls)")
    if url.scheme != "https" and not is_loopback(url.hostname or "") and not config.gateway.allow_plain_http:
        raise UntrustedEndpoint(endpoint, "is plain http away from loopback (set gateway.allow_plain_http to allow it)")
    return endpoint
