"""``Tally``: counts and observations added in one go give the same exposition as prometheus-client's
own ``inc`` and ``observe`` one by one (it writes a histogram child's per-bucket values, which
``observe`` itself updates: this pins that for the installed prometheus-client)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bastion.metrics.registry import STAGE_BUCKETS
from bastion.metrics.tally import Tally

VALUES = st.lists(st.sampled_from([0.0, *STAGE_BUCKETS, 7.5, 1e-6, 0.0003]) | st.floats(0, 20), max_size=60)


def _metrics() -> tuple[CollectorRegistry, Counter, Counter, Histogram]:
    registry = CollectorRegistry()
    plain = Counter("plain", "no labels", registry=registry)
    counter = Counter("calls", "labelled", ["route", "outcome"], registry=registry)
    histogram = Histogram("took_seconds", "labelled", ["stage"], buckets=STAGE_BUCKETS, registry=registry)
    return registry, plain, counter, histogram


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


@settings(max_examples=60, deadline=None)
@given(values=VALUES, stages=st.lists(st.sampled_from(["audit", "forward"]), min_size=60, max_size=60))
def test_a_flush_exposes_what_observe_and_inc_would(values: list[float], stages: list[str]) -> None:
    direct, plain, counter, histogram = _metrics()
    tallied, plain2, counter2, histogram2 = _metrics()
    tally = Tally()
    for value, stage in zip(values, stages, strict=False):
        histogram.labels(stage).observe(value)
        counter.labels("notes", stage).inc()
        plain.inc(2)
        tally.histogram(histogram2, (stage,)).add(value)
        tally.count(counter2, ("notes", stage)).n += 1
        tally.count(plain2, ()).n += 2
    tally.flush()
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))
    tally.flush()  # nothing new: nothing added twice
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))
    histogram.labels("audit").observe(0.3)  # and what comes after a flush is added at the next
    tally.histogram(histogram2, ("audit",)).add(0.3)
    tally.flush()
    assert _without_created(generate_latest(tallied)) == _without_created(generate_latest(direct))
