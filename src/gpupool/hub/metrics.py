"""Prometheus metrics of one hub, on a registry of its own (tests build many hubs in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "poolhub_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "poolhub_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.grpc_requests = Counter(
            "poolhub_grpc_requests_total",
            "gRPC calls by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "poolhub_grpc_request_duration_seconds",
            "gRPC call latency by method",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.postings = Counter(
            "poolhub_ledger_postings_total", "Ledger postings written, by kind", ["kind"], registry=r
        )
        self.posting_replays = Counter(
            "poolhub_ledger_idempotent_replays_total", "Requests answered from an earlier posting", registry=r
        )
        self.logins = Counter("poolhub_logins_total", "Login attempts by outcome", ["outcome"], registry=r)
        self.miners_online = Gauge("poolhub_miners_online", "Nodes currently online", registry=r)
        self.heartbeats = Counter("poolhub_heartbeats_total", "Heartbeats received from nodes", registry=r)
        self.registrations = Counter(
            "poolhub_registrations_total", "Node registrations by outcome", ["outcome"], registry=r
        )
        self.match_latency = Histogram(
            "poolhub_match_latency_ms",
            "Time to answer one match, milliseconds",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100),
            registry=r,
        )
        # Seed 002's own names (AITBC's pool hub), beside ours: its dashboards and tests read these.
        self.match_requests = Counter(
            "poolhub_match_requests", "Total number of match requests received", registry=r
        )
        self.match_latency_seconds = Histogram(
            "poolhub_match_latency_seconds",
            "Latency of match processing",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.tasks_live = Gauge(
            "poolhub_tasks", "Live tasks by state (refreshed by maintenance)", ["state"], registry=r
        )
        self.matches = Counter("poolhub_matches_total", "Match requests by outcome", ["outcome"], registry=r)
        self.poc_batches = Counter(
            "poolhub_poc_batches_total",
            "PoC batches received, by outcome or refusal code",
            ["outcome"],
            registry=r,
        )
        self.poc_nonces = Counter("poolhub_poc_nonces_total", "Nonces in accepted PoC batches", registry=r)
        self.poc_rounds_validated = Counter(
            "poolhub_poc_rounds_validated_total", "PoC rounds closed and validated", registry=r
        )
        self.poc_fraud = Counter(
            "poolhub_poc_fraud_total", "Node results of validated rounds found fraudulent", registry=r
        )
