"""The figures of one ``make bench-peers`` run and the tables made of them: per target and
concurrency the medians over the rounds, and the ratio of the best peer's CPU per call to Bastion's
judged against issue 16's target."""

from __future__ import annotations

from dataclasses import dataclass

from load import Run
from results import Medians, Verdict
from scenario import DEFAULT

DIRECT = "direct"
TARGET_RATIO = 10.0
"""Issue 16: Bastion spends at least this many times less CPU per call than the best peer configuration."""


@dataclass(frozen=True)
class Target:
    """A target as the report describes it: its versions and configuration (markdown), or why it failed."""

    name: str
    versions: str
    configuration: str
    error: str | None = None  # set when it did not start or failed the SDK check: not measured


@dataclass
class PeerResults(Medians):
    """Every wrk run of one ``make bench-peers`` run, with what the report says about the targets."""

    targets: list[Target]
    concurrencies: tuple[int, ...]
    rounds: int
    duration_s: float
    started: str
    elapsed_s: float = 0.0
    quick: bool = False  # --quick: a smoke test

    @property
    def measured(self) -> list[str]:
        """The targets that were measured, in the order of the rounds."""
        return [t.name for t in self.targets if t.error is None]

    @property
    def peers(self) -> list[str]:
        """The measured targets other than the echo upstream alone and Bastion."""
        return [name for name in self.measured if name not in (DIRECT, DEFAULT)]

    def errors(self, target: str) -> list[Run]:
        """``target``'s runs that had errors or completed no call."""
        return [r for r in self.runs if r.target == target and (r.errors or not r.calls)]

    def best_peer(self, conns: int) -> str | None:
        """The peer with the least CPU per call at ``conns``, among those whose runs had no errors."""
        clean = [p for p in self.peers if not self.errors(p) and self.pick(p, conns)]
        return min(clean, key=lambda p: self.med(p, conns, "server_cpu_ms"), default=None)

    def ratio(self, conns: int) -> float | None:
        """CPU per call of :meth:`best_peer` / Bastion's at ``conns``; None without both."""
        best, bastion = self.best_peer(conns), self.med(DEFAULT, conns, "server_cpu_ms")
        if best is None or not bastion:
            return None
        return self.med(best, conns, "server_cpu_ms") / bastion

    HEADER = ("target", "c", "calls/s", "p50 (ms)", "p99 (ms)", "CPU per call (ms)", "vs Bastion", "echo CPU (ms)")

    def rows(self) -> list[tuple[str, ...]]:
        """:attr:`HEADER`, then one row per concurrency and measured target: the medians over the
        rounds; CPU per call is the gateway's process tree's (the echo upstream's for ``direct``)."""
        rows: list[tuple[str, ...]] = [self.HEADER]
        for conns in self.concurrencies:
            bastion = self.med(DEFAULT, conns, "server_cpu_ms")
            for target in self.measured:
                cpu = self.med(target, conns, "server_cpu_ms")
                bad = self.errors(target)
                name = f"{target} (errors: {sum(r.errors for r in bad)})" if bad else target
                rows.append((
                    name, str(conns), f"{self.med(target, conns, 'throughput'):,.0f}",
                    f"{self.med(target, conns, 'p50_ms'):.3f}", f"{self.med(target, conns, 'p99_ms'):.3f}",
                    f"{cpu:.3f}", f"{cpu / bastion:.1f}x" if bastion and target != DIRECT else "",
                    f"{self.med(target, conns, 'upstream_cpu_ms'):.3f}",
                ))  # fmt: skip
        return rows

    RATIO_HEADER = ("c", "best peer (least CPU per call)", "its CPU per call (ms)", "Bastion's (ms)", "ratio")

    def ratio_rows(self) -> list[tuple[str, ...]]:
        """:attr:`RATIO_HEADER`, then per concurrency the best peer, both CPU figures and their ratio."""
        rows: list[tuple[str, ...]] = [self.RATIO_HEADER]
        for conns in self.concurrencies:
            best, ratio = self.best_peer(conns), self.ratio(conns)
            bastion = f"{self.med(DEFAULT, conns, 'server_cpu_ms'):.3f}"
            if best is None or ratio is None:
                rows.append((str(conns), "none measured", "", bastion, "n/a"))
                continue
            rows.append((str(conns), best, f"{self.med(best, conns, 'server_cpu_ms'):.3f}", bastion, f"{ratio:.1f}x"))
        return rows

    def verdicts(self) -> list[Verdict]:
        """Issue 16's ratio target at each concurrency where it can be judged (a peer was measured):
        the best peer's CPU per call at least :data:`TARGET_RATIO` times Bastion's."""
        out: list[Verdict] = []
        for conns in self.concurrencies:
            ratio = self.ratio(conns)
            if ratio is not None:
                name = f"at least {TARGET_RATIO:g}x less CPU per call than the best peer configuration at c={conns}"
                out.append((name, f"{ratio:.1f}x ({self.best_peer(conns)})", ratio >= TARGET_RATIO))
        return out

    def invalid(self) -> list[Run]:
        """The runs of the echo upstream alone and of Bastion that had errors: they void the comparison
        (a peer's errors are reported in its row and keep it out of the ratio)."""
        return [*self.errors(DIRECT), *self.errors(DEFAULT)]
