"""Bastion's Prometheus metrics: their names, labels, units and buckets, in one place.

Naming follows Prometheus' conventions (https://prometheus.io/docs/practices/naming/): the
``bastion_`` prefix, base units (seconds), ``_total`` on counters (``prometheus_client`` adds it),
``_seconds`` on histograms. Every label has a bounded set of values: route names and policy ids
come from the configuration and the loaded policy set, stages and reasons from the code (a
``BastionError``'s stable ``code``), methods from the MCP specification; anything else is counted
as ``other``. No label ever carries a subject, a session, a tool argument or a client address.

The metrics live in a registry of their own (not ``prometheus_client.REGISTRY``), so several
gateways in one process (tests) do not collide. Under ``bastion serve --workers N`` the values are
kept in ``PROMETHEUS_MULTIPROC_DIR`` instead (``bastion.metrics.multiprocess``); a gauge's
``multiprocess_mode`` says how the workers' values combine.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AUDIT_WRITE_BUCKETS", "DECISION_BUCKETS", "STAGE_BUCKETS", "UPSTREAM_BUCKETS", "BastionMetrics"]

STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: a stage runs in microseconds (checks) to milliseconds (an fsynced audit record)."""
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: an upstream answers in milliseconds to its timeout (``routes[].http.timeout_s``, 60 s)."""
AUDIT_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: one transaction of audit records, an fsync on a local disk to a round trip to PostgreSQL."""
DECISION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
"""Seconds: a person decides in seconds (at the keyboard) to hours (``approvals.ttl``, up to 7 days)."""


class BastionMetrics:
    """Every metric Bastion exports, registered in ``registry`` (a new one when ``None``).

    Request path (fed by ``bastion.metrics.observer.MetricsObserver``):

    - ``bastion_requests_total{route, method, outcome}``: requests on the MCP endpoints, once each
      when it is over; ``outcome`` is ``ok`` (forwarded, answered), ``result_error`` (forwarded,
      the upstream answered with a JSON-RPC error or a tool error), ``error`` (forwarded, failed:
      upstream unreachable, a stream cut, a result withheld) or ``denied`` (not forwarded);
    - ``bastion_decisions_total{route, effect, policy}``: policy decisions, once per determining
      policy id (``policy=""`` for a default deny);
    - ``bastion_denials_total{route, reason}``: requests not forwarded, by the error's ``code``;
    - ``bastion_stage_duration_seconds{stage}``: each stage's time (``bastion.pipeline.plan``);
      ``stage="audit"`` is the durable decision record's write;
    - ``bastion_upstream_duration_seconds{route}``: the forward stage, until the upstream's reply
      began (an SSE reply's stream is not included);
    - ``bastion_upstream_errors_total{route, reason}``: forwarded requests that failed;
    - ``bastion_audit_write_failures_total``: decision records that could not be made durable
      (each refused its request with 503);
    - ``bastion_limits_hit_total{route, reason}``: calls refused by the limits stage;
    - ``bastion_high_risk_calls_total{route, outcome}``: ``tools/call`` on a ``destructive`` tool,
      ``forwarded`` or ``denied``;
    - ``bastion_approvals_total{route, status}``: calls that carried an approval, by its status
      once the call was over (``approved``, ``pending``, ``denied``, ``expired``, ...);
    - ``bastion_approvals_waiting``: calls held open right now waiting for a person's decision, in
      this process (summed over the workers; a deployment's is the sum over its replicas);
    - ``bastion_sessions_created_total{route}``, ``bastion_sessions_deleted_total{route}``.

    Approvals, audit log and sessions (``bastion.metrics.gateway_metrics``):

    - ``bastion_approval_decision_seconds{outcome}``: seconds from a request to its decision,
      ``outcome`` ``approved`` or ``denied``, observed by the process that took the decision (a
      deployment's is the sum over its replicas; ``_count`` is the decisions taken);
    - ``bastion_approvals_pending``: requests pending in the approval store, the deployment's
      whichever replica they were made on, read when ``/metrics`` is scraped (every replica reports
      the same value: aggregate with ``max``, not ``sum``);
    - ``bastion_audit_write_duration_seconds``: time to make one transaction of audit records
      durable (from its start to its commit, fsync or PostgreSQL's WAL flush included; one
      transaction holds every record queued meanwhile);
    - ``bastion_audit_queue_depth``: audit records of this process waiting for their transaction
      (set at each flush of the observer; summed over the workers);
    - ``bastion_sessions_open``: MCP sessions in the session store, read when ``/metrics`` is
      scraped: this process's (the embedded store) or the deployment's (``stores.redis``: every
      replica reports the same value, aggregate with ``max``); idle ones past
      ``server.session_idle_s`` count until they are swept (within a minute).

    Program (set once at start by ``bastion.metrics.program``; ``credentials`` is
    ``token_exchange``, ``user_oauth``, ``static_secret`` or ``none``):

    - ``bastion_routes{credentials}``, ``bastion_tools_configured{route}``,
      ``bastion_tools_permitted{route}``, ``bastion_tools_high_risk{route}``,
      ``bastion_tools_high_risk_approval{route}``, ``bastion_policies``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("bastion_requests", "Requests on the MCP endpoints, counted once each is over.",
                                ["route", "method", "outcome"], registry=r)  # fmt: skip
        self.decisions = Counter("bastion_decisions", "Policy decisions, once per determining policy id.",
                                 ["route", "effect", "policy"], registry=r)  # fmt: skip
        self.denials = Counter("bastion_denials", "Requests not forwarded, by the error's stable code.",
                               ["route", "reason"], registry=r)  # fmt: skip
        self.stage_duration = Histogram("bastion_stage_duration_seconds", "Time in each stage of the request path.",
                                        ["stage"], buckets=STAGE_BUCKETS, registry=r)  # fmt: skip
        self.upstream_duration = Histogram("bastion_upstream_duration_seconds",
                                           "Time until the upstream's reply began, per route.",
                                           ["route"], buckets=UPSTREAM_BUCKETS, registry=r)  # fmt: skip
        self.upstream_errors = Counter("bastion_upstream_errors", "Forwarded requests that failed, by code.",
                                       ["route", "reason"], registry=r)  # fmt: skip
        self.audit_failures = Counter("bastion_audit_write_failures",
                                      "Decision records that could not be made durable (the call was refused).",
                                      registry=r)  # fmt: skip
        self.limits_hit = Counter("bastion_limits_hit", "Calls refused by rate limits, quotas or session caps.",
                                  ["route", "reason"], registry=r)  # fmt: skip
        self.high_risk_calls = Counter("bastion_high_risk_calls", "tools/call on destructive tools.",
                                       ["route", "outcome"], registry=r)  # fmt: skip
        self.approvals = Counter("bastion_approvals", "Calls that carried an approval, by its final status.",
                                 ["route", "status"], registry=r)  # fmt: skip
        self.approvals_waiting = Gauge("bastion_approvals_waiting", "Calls held open waiting for an approval.",
                                       registry=r, multiprocess_mode="livesum")  # fmt: skip
        self.approval_decision = Histogram("bastion_approval_decision_seconds",
                                           "Seconds from an approval request to its decision, by outcome.",
                                           ["outcome"], buckets=DECISION_BUCKETS, registry=r)  # fmt: skip
        self.approvals_pending = Gauge("bastion_approvals_pending", "Approval requests pending in the approval store.",
                                       registry=r, multiprocess_mode="livemostrecent")  # fmt: skip
        self.audit_write = Histogram("bastion_audit_write_duration_seconds",
                                     "Time to make one transaction of audit records durable.",
                                     buckets=AUDIT_WRITE_BUCKETS, registry=r)  # fmt: skip
        self.audit_queue = Gauge("bastion_audit_queue_depth", "Audit records waiting for their transaction.",
                                 registry=r, multiprocess_mode="livesum")  # fmt: skip
        self.sessions_open = Gauge("bastion_sessions_open", "MCP sessions in the session store.", registry=r,
                                   multiprocess_mode="livemostrecent")  # fmt: skip
        self.sessions_created = Counter("bastion_sessions_created", "MCP sessions opened.", ["route"], registry=r)
        self.sessions_deleted = Counter("bastion_sessions_deleted", "MCP sessions ended by the client.",
                                        ["route"], registry=r)  # fmt: skip
        self.routes = Gauge("bastion_routes", "Configured routes by the upstream credential their calls carry.",
                            ["credentials"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.tools_configured = Gauge("bastion_tools_configured", "Tools in the route's configured inventory.",
                                      ["route"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.tools_permitted = Gauge("bastion_tools_permitted",
                                     "Configured tools some policy may permit calls on (the rest: default deny).",
                                     ["route"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.tools_high_risk = Gauge("bastion_tools_high_risk", "Configured tools whose risk is destructive.",
                                     ["route"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.tools_high_risk_approval = Gauge("bastion_tools_high_risk_approval",
                                              "Destructive configured tools whose every permit asks for approval.",
                                              ["route"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.policies = Gauge("bastion_policies", "Policies in the loaded policy set.", registry=r,
                              multiprocess_mode="livemax")  # fmt: skip
