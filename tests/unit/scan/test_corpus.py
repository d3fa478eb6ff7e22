"""Detection measured on public corpora (tests/data/scan/README.md): recall is the share of
poisoned definitions with at least one high finding, the false-positive rate the share of benign
definitions with any high finding. The floors are the issue's: recall at least 0.95, false
positives at most 0.01. ``scripts/measure-scan-corpus.py`` prints the same figures."""

from __future__ import annotations

import pytest
from tests.support.scan_corpus import figures, samples


def test_the_public_corpus_meets_the_floors() -> None:
    measured = figures(samples("reference") + samples("third-party"))
    print("\n".join(measured.lines("reference servers + vulnerable servers")))
    assert measured.poisoned >= 10  # the corpus is all there
    assert measured.benign >= 150
    assert measured.recall >= 0.95, measured.lines("misses")
    assert measured.false_positive_rate <= 0.01, measured.lines("false positives")


def test_no_reference_server_definition_has_a_high_finding() -> None:
    measured = figures(samples("reference"))
    assert measured.benign > 100
    assert measured.false_alarms == []


@pytest.mark.parametrize("corpus", ["community", "authored"])
def test_the_other_sets_meet_the_floors(corpus: str) -> None:
    measured = figures(samples(corpus))
    print("\n".join(measured.lines(corpus)))
    assert measured.false_positive_rate <= 0.01, measured.lines(corpus)
    if measured.poisoned:
        assert measured.recall >= 0.95, measured.lines(corpus)
