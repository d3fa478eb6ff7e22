"""The metrics observer: the request path's counts and timings, fed at the runner's step.

``MetricsObserver`` is a ``bastion.pipeline.observer.StepObserver``. Each stage's end is one
histogram observation (``stage``); the forward stage's is also the route's upstream latency; an
error at the end of the limits stage is a limit hit, at the end of the audit stage an audit
write failure. The request itself is counted once, at the end of the runner's ``outcome`` step
(which every request on an MCP endpoint reaches, refused ones included, after its reply was
sent), from what the ``Exchange`` says by then: the decision (``exchange.decision``: effect,
policy ids), whether it was forwarded (``notes["audit_event"]``, set by the audit stage only
when the decision record is durable), the error (``exchange.error``: its stable ``code``), the
approval (``notes["approval"]``) and the tool's risk (``exchange.resource``). No stage changes.

Every label value is taken from a closed set (see ``bastion.metrics.registry``); a value outside
it is counted as ``other``. Never raises on a well-formed exchange; the runner logs and ignores
what an observer raises anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from mcp_types.methods import CLIENT_NOTIFICATIONS, CLIENT_REQUESTS
from prometheus_client import Counter, Gauge

from bastion.errors import BastionError
from bastion.metrics.registry import BastionMetrics
from bastion.metrics.tally import Observations, Tally
from bastion.pipeline.context import Exchange
from bastion.pipeline.plan import FILTER_SLOTS, POST_SLOTS
from bastion.pipeline.stages.classify import SESSION_METHODS, TASK_METHODS

__all__ = ["FLUSH_S", "OTHER", "MetricsObserver", "PolicySource", "error_codes", "known_methods"]

OTHER = "other"
"""The label value of anything outside a label's closed set."""

FLUSH_S = 1.0
"""Seconds from a request's counts to their flush into the metrics (what a worker's file may lag)."""

_APPROVAL_STATUSES = frozenset({"pending", "approved", "denied", "expired", "consumed"})


def known_methods() -> frozenset[str]:
    """Every MCP client-to-server method name of every protocol version, the tasks extension's,
    and the labels Bastion gives a GET stream and a DELETE (``stream/open``, ``session/delete``)."""
    names = {method for method, _ in (*CLIENT_REQUESTS, *CLIENT_NOTIFICATIONS)}
    return frozenset(names | SESSION_METHODS | TASK_METHODS | {"stream/open", "session/delete"})


def error_codes() -> frozenset[str]:
    """The stable ``code`` of every ``BastionError`` class (``bastion.errors`` and its subclasses
    elsewhere, as imported so far)."""
    codes: set[str] = set()
    pending: list[type[BastionError]] = [BastionError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


class PolicySource(Protocol):
    """The enforced policy set as the observer reads it (``PolicyEngine``): its ``version`` and ids."""

    @property
    def version(self) -> str:
        """Changes when the set does (a hot reload)."""
        ...

    @property
    def policy_ids(self) -> Iterable[str]:
        """The ``@id`` of every policy in the set."""
        ...


class MetricsObserver:
    """Counts and times the requests of every route into ``metrics``. The ``policy`` label takes
    only the ids of ``policies`` (the enforced ``PolicyEngine``), re-read when its ``version``
    changes (a hot reload adopts a new set in place); ``on_policies`` (the program gauges) is
    called at the first flush after such a change, off the request path.

    Counts go to a ``Tally`` first and reach the metrics at ``flush``: scheduled ``FLUSH_S`` after
    the first request that tallied something (on the running event loop; at once without one), and
    called by ``/metrics`` before it reads the registry. The gauge of held calls is set at once;
    the gauges given to ``sample`` are set at each flush.
    """

    def __init__(self, metrics: BastionMetrics, policies: PolicySource, *,
                 on_policies: Callable[[], None] | None = None) -> None:  # fmt: skip
        self._m = metrics
        self._source = policies
        self._version = policies.version
        self._policies = frozenset(policies.policy_ids)
        self._on_policies = on_policies
        self._program_version = self._version  # the version the program gauges were set for
        self._methods = known_methods()
        self._codes = error_codes()
        self._tally = Tally()
        self._stages = {stage: self._tally.histogram(metrics.stage_duration, (stage,))
                        for stage in (*POST_SLOTS, *FILTER_SLOTS, OTHER)}  # fmt: skip
        self._upstreams: dict[str, Observations] = {}  # by route
        self._flush_due: asyncio.TimerHandle | None = None
        self._held: set[str] = set()  # decision ids of calls held open for an approval
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []

    def sample(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Set ``gauge`` to ``read()`` at every flush (a count this process keeps in memory, read in
        constant time: the audit queue's depth)."""
        self._sampled.append((gauge, read))

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        """Nothing: durations come with ``stage_ended``."""

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        """One observation of ``stage``'s time; a limit hit, an audit write failure, a held call; at
        the end of ``outcome``, the request's counts."""
        cell = self._stages.get(stage)
        (cell if cell is not None else self._stages[OTHER]).add(duration_s)
        if stage == "outcome":
            self._finished(exchange)
        elif stage == "forward":
            route = exchange.route.name
            upstream = self._upstreams.get(route)
            if upstream is None:
                upstream = self._upstreams[route] = self._tally.histogram(self._m.upstream_duration, (route,))
            upstream.add(duration_s)
        elif error is not None and stage == "limits":
            self._inc(self._m.limits_hit, exchange.route.name, self._code(error))
        elif error is not None and stage == "audit":
            self._inc(self._m.audit_failures)
        elif stage == "approve" and error is None and "hold" in exchange.notes:
            self._held.add(exchange.decision_id)
            self._m.approvals_waiting.inc()

    def flush(self) -> None:
        """Add what was tallied to the metrics (``Tally.flush``); after a policy reload, call
        ``on_policies`` first."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        version = self._source.version
        if version != self._program_version and self._on_policies is not None:
            self._program_version = version
            self._on_policies()
        self._tally.flush()
        for gauge, read in self._sampled:
            gauge.set(read())

    def _flush_later(self) -> None:
        if self._flush_due is not None:
            return
        try:
            self._flush_due = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
        except RuntimeError:  # no event loop (a direct call): at once
            self.flush()

    def _inc(self, counter: Counter, *labels: str) -> None:
        self._tally.count(counter, labels).n += 1

    def _code(self, error: BastionError) -> str:
        code = error.code
        return code if code in self._codes else OTHER

    @staticmethod
    def _high_risk(exchange: Exchange) -> bool:
        """A ``tools/call`` on a ``destructive`` tool (the risk a tool has unless configured)."""
        resource = exchange.resource
        if exchange.method != "tools/call" or resource is None or resource.kind != "Tool":
            return False
        return bool(resource.attrs.get("risk", "destructive") == "destructive")

    def _finished(self, exchange: Exchange) -> None:
        """Count one request that is over (its reply sent, its outcome recorded)."""
        m, inc, route = self._m, self._inc, exchange.route.name
        if exchange.decision_id in self._held:
            self._held.discard(exchange.decision_id)
            m.approvals_waiting.dec()
        error = exchange.error
        forwarded = exchange.notes.get("audit_event") is not None
        if forwarded:
            if error is not None:
                outcome = "error"
                if exchange.notes.get("failed_stage") in (None, "forward"):  # not a filter's refusal
                    inc(m.upstream_errors, route, self._code(error))
            else:
                outcome = "result_error" if exchange.result_error else "ok"
        else:
            outcome = "denied"
            inc(m.denials, route, self._code(error) if error is not None else "policy_denied")
        method = exchange.method or exchange.notes.get("label") or exchange.kind or "invalid"
        inc(m.requests, route, method if method in self._methods else OTHER, outcome)
        decision = exchange.decision
        if decision is not None:
            if self._source.version != self._version:  # a reload: its ids are the label's values now
                self._version, self._policies = self._source.version, frozenset(self._source.policy_ids)
            for policy in decision.policy_ids or ("",):
                known = policy in self._policies or not policy
                inc(m.decisions, route, decision.effect, policy if known else OTHER)
        if forwarded and error is None:
            if exchange.new_session:
                inc(m.sessions_created, route)
            if exchange.http.method == "DELETE":
                inc(m.sessions_deleted, route)
        if self._high_risk(exchange):
            inc(m.high_risk_calls, route, "forwarded" if forwarded else "denied")
        approval = exchange.notes.get("approval")
        if isinstance(approval, dict):
            status = approval.get("status")
            inc(m.approvals, route, status if status in _APPROVAL_STATUSES else OTHER)
        self._flush_later()
