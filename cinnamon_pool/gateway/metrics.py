"""The gateway's Prometheus metrics (``/metrics`` of ``cinnamon-pool gateway``), one registry per gateway."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, pool: str, in_flight_count: Callable[[], float], waiting_count: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.refusals = Counter(
            "cinnamon_pool_gateway_refusals_total", "Requests refused, by reason", ["pool", "reason"], registry=self.registry
        )
        self.forwarded = Counter("cinnamon_pool_gateway_requests_total", "Requests forwarded", ["pool", "method"], registry=self.registry)
        in_flight = Gauge(
            "cinnamon_pool_gateway_in_flight", "Requests and streams in flight to the containers", ["pool"], registry=self.registry
        )
        in_flight.labels(pool).set_function(in_flight_count)
        waiting = Gauge(
            "cinnamon_pool_gateway_sessions_waiting",
            "Clients on connect waiting on this gateway for a container",
            ["pool"],
            registry=self.registry,
        )
        waiting.labels(pool).set_function(waiting_count)
        self.latency = Histogram(
            "cinnamon_pool_gateway_upstream_seconds",
            "Time from forwarding a request to the container's first response byte, per container",
            ["pool", "container"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.closed = Counter(
            "cinnamon_pool_gateway_streams_closed_total", "Streams closed because their lease ended", ["pool"], registry=self.registry
        )
        self.tool_seconds = Histogram(
            "cinnamon_pool_gateway_tool_call_seconds",
            "MCP tools/call latency per container, from forwarding to the end of the answer",
            ["pool", "container"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tool_results = Counter(
            "cinnamon_pool_gateway_tool_calls_total",
            "MCP tools/call per container, by result (error: HTTP >= 400, a broken answer, or isError)",
            ["pool", "container", "result"],
            registry=self.registry,
        )
        self.handovers = Counter(
            "cinnamon_pool_gateway_initialize_total",
            "Jobs' initialize requests: answered with a prepared session, or forwarded (cold)",
            ["pool", "session"],
            registry=self.registry,
        )
        self.session_waits = Histogram(
            "cinnamon_pool_gateway_session_wait_seconds",
            "Sessions on connect: from the initialize to the container's first answer (the wait for a lease included)",
            ["pool"],
            buckets=(*LATENCY_BUCKETS, 60, 120),
            registry=self.registry,
        )
