"""The figures of one run (every wrk run, the in-process timings, the profiles, the scaling rows) and
the tables made of them: the results side by side, the baseline comparison, and issue 16's targets
met or missed (the scaling rows' tables are ``scaling.Scaling``'s). :class:`Medians` and
:data:`Verdict` serve ``make bench-peers``'s results too."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baseline import BaselineCommit
from load import Run
from profiling import Profile
from scenario import BASELINE, COMPARED, CONCURRENCIES, DEFAULT, NORMAL, PROFILED

if TYPE_CHECKING:
    from observability import Observability
    from scaling import Scaling  # which imports median from here

TARGET_ADDED_P50_MS = 1.0
"""Issue 16: the default Bastion adds at most this much latency p50 at concurrency 1 (ms)."""
TARGET_CPU_MS = {1: 0.8, 16: 0.3}
"""Issue 16: the default Bastion's CPU per call at most this (ms), per concurrency."""

Verdict = tuple[str, str, bool | None]
"""A target as the reports give it: its name, the figure measured, and whether it was met (None: a
figure the issue asks for without a threshold to judge it by)."""


def median(runs: list[Run], attr: str) -> float:
    values = [getattr(r, attr) for r in runs]
    return statistics.median(values) if values else 0.0


@dataclass
class Medians:
    """Wrk runs, and the median of a figure over the rounds per target and concurrency."""

    runs: list[Run]

    def pick(self, target: str, conns: int) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.conns == conns]

    def med(self, target: str, conns: int, attr: str) -> float:
        """The median of ``attr`` (a :class:`~load.Run` field or property) over ``target``'s runs at ``conns``."""
        return median(self.pick(target, conns), attr)


@dataclass
class Results(Medians):
    """The figures of one ``make bench`` run and the tables they make; ``report`` renders them."""

    micro: dict[str, float]
    profiles: dict[int, Profile]
    profile_runs: dict[int, Run]
    profile_note: str
    rounds: int
    duration_s: float
    started: str
    elapsed_s: float = 0.0
    baseline: BaselineCommit | None = None
    baseline_route_egress_keys: bool = True
    """Whether the baseline's config had ``routes[].http.allow_http``/``allow`` (see ``BaselineCommit.config_note``)."""
    scaling: Scaling | None = None
    """The scaling rows (``scaling.measure_scaling``); None with ``--no-scaling`` or an invalid main run."""
    observability: Observability | None = None
    """Metrics and tracing per call, on and off (``observability.measure_observability``); None when not measured."""

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(label, direct, Bastion default, Bastion synchronous=normal, ratio or added: default / normal)."""
        rows: list[tuple[str, str, str, str, str]] = []
        for label, attr in (("latency p50, c=1 (ms)", "p50_ms"), ("latency p99, c=1 (ms)", "p99_ms")):
            d, b, n = (self.med(t, 1, attr) for t in COMPARED)
            rows.append((label, f"{d:.3f}", f"{b:.3f}", f"{n:.3f}", f"+{b - d:.3f} / +{n - d:.3f} ms"))
        for conns in CONCURRENCIES:
            d, b, n = (self.med(t, conns, "throughput") for t in COMPARED)
            ratio = f"{b / d:.3f}x / {n / d:.3f}x" if d else "-"
            rows.append((f"throughput, c={conns} (calls/s)", f"{d:,.0f}", f"{b:,.0f}", f"{n:,.0f}", ratio))
        for conns in CONCURRENCIES:
            d, b, n = (self.med(t, conns, "server_cpu_ms") for t in COMPARED)
            ratio = f"{b / d:.1f}x / {n / d:.1f}x" if d else "-"
            rows.append((f"server CPU per request, c={conns} (ms)", f"{d:.3f} (echo)", f"{b:.3f}", f"{n:.3f}", ratio))
        for conns in PROFILED:
            rows.append((self._split_label(conns), "", self._split(DEFAULT, conns), self._split(NORMAL, conns), ""))
        for label, attr in (("upstream (echo) CPU", "upstream_cpu_ms"), ("wrk CPU", "wrk_cpu_ms")):
            d, b, n = (self.med(t, 16, attr) for t in COMPARED)
            rows.append((f"{label} per request, c=16 (ms)", f"{d:.3f}", f"{b:.3f}", f"{n:.3f}", ""))
        m = self.micro
        if m:
            rows.append(
                (
                    "policy decision alone, `PolicyEngine.decide`, seen before / new arguments (µs)",
                    "",
                    f"{m['decide_us']:.1f} / {m.get('decide_uncached_us', float('nan')):.1f}",
                    "same",
                    "",
                )
            )
            if "limits_flow_us" in m:
                redis = m.get("limits_flow_redis_us")
                rows.append((
                    "two rate limits + one data-flow rule, CPU added per call, embedded / Redis (µs)", "",
                    f"{m['limits_flow_us']:.1f} / " + (f"{redis:.0f}" if redis is not None else "no Redis"), "same", "",
                ))  # fmt: skip
            if "scan_first_100_ms" in m:
                rows.append((
                    "definition scan of a 100-tool `tools/list`, first sight / judged before (ms)", "",
                    f"{m['scan_first_100_ms']:.1f} / {m['scan_cached_100_us'] / 1000:.2f}", "same", "",
                ))  # fmt: skip
                rows.append((
                    "result inspection (redaction) of a clean 4 KB text result, CPU per call (µs)", "",
                    f"{m['redact_4kb_us']:.1f}", "same", "",
                ))  # fmt: skip

            def cached_uncached(label: str, key: str) -> tuple[str, str, str, str, str]:
                """A row of ``{key}_cached_us`` / ``{key}_uncached_us``."""
                return (label, "", f"{m[f'{key}_cached_us']:.1f} / {m[f'{key}_uncached_us']:.0f}", "same", "")

            rows.append(cached_uncached("token verify, Bastion-issued, cached / uncached (µs)", "verify"))
            rows.append(
                cached_uncached(
                    "token verify, external issuer (ES256, JWKS fetched before), cached / uncached (µs)",
                    "verify_external",
                )
            )
            rows.append(
                (
                    "token verify, revocation-list check alone, `RevocationList.is_revoked` (µs)",
                    "",
                    f"{m['revocation_check_us']:.2f}",
                    "same",
                    "",
                )
            )
            rows.append(
                cached_uncached("authenticate stage whole, `AuthenticateStage.run`, cached / uncached (µs)", "stage")
            )
            rows.append(
                (
                    "audit bodies, `decision_body` / `outcome_body` (µs)",
                    "",
                    f"{m['audit_build_us']:.1f} / {m['audit_outcome_us']:.1f}",
                    "same",
                    "",
                )
            )
            rows.append(("audit seal per record, writer thread (µs)", "", f"{m['audit_seal_us']:.1f}", "same", ""))
            rows.append(
                (
                    "tools/call with 1 MB of arguments, CPU of parse, limits, decision, digest, redaction: "
                    "one string / 12,000 objects (ms)",
                    "",
                    f"{m['large_text_ms']:.1f} / {m['large_records_ms']:.1f}",
                    "same",
                    "",
                )
            )
            rows.append(
                (
                    "upstream call, CPU: `HttpUpstream.send` (pooled, guarded) / `aiohttp.ClientSession` (µs)",
                    "",
                    f"{m['upstream_guarded_us']:.0f} / {m['upstream_plain_us']:.0f}",
                    "same",
                    "",
                )
            )
            rows.append(
                (
                    "audit append committed, one at a time (ms)",
                    "",
                    f"{m['audit_append_full_ms']:.3f}",
                    f"{m['audit_append_normal_ms']:.3f}",
                    "",
                )
            )
        return rows

    @staticmethod
    def _split_label(conns: int) -> str:
        return f"  Bastion CPU split, c={conns}: event loop / audit thread / kernel part (ms)"

    def _split(self, target: str, conns: int) -> str:
        """A Bastion's CPU per request at ``conns``: event loop / audit thread / kernel part, in ms."""
        return (
            f"{self.med(target, conns, 'main_cpu_ms'):.3f} / {self.med(target, conns, 'other_cpu_ms'):.3f} / "
            f"{self.med(target, conns, 'server_sys_ms'):.3f}"
        )

    def baseline_header(self) -> tuple[str, str, str, str]:
        if self.baseline is None:
            raise RuntimeError("no baseline in this run")
        return ("", self.baseline.title, "Bastion now", "now vs baseline")

    def baseline_rows(self) -> list[tuple[str, str, str, str]]:
        """(label, Bastion at the baseline commit, Bastion now, now vs baseline): both in the default
        configuration, measured in the same rounds against the same upstream."""
        rows: list[tuple[str, str, str, str]] = []
        for label, attr in (("latency p50, c=1 (ms)", "p50_ms"), ("latency p99, c=1 (ms)", "p99_ms")):
            then, now = self.med(BASELINE, 1, attr), self.med(DEFAULT, 1, attr)
            rows.append((label, f"{then:.3f}", f"{now:.3f}", f"{now - then:+.3f} ms"))
        for conns in CONCURRENCIES:
            then, now = self.med(BASELINE, conns, "throughput"), self.med(DEFAULT, conns, "throughput")
            ratio = f"{now / then:.3f}x" if then else "-"
            rows.append((f"throughput, c={conns} (calls/s)", f"{then:,.0f}", f"{now:,.0f}", ratio))
        for conns in CONCURRENCIES:
            then, now = self.med(BASELINE, conns, "server_cpu_ms"), self.med(DEFAULT, conns, "server_cpu_ms")
            ratio = f"{now / then:.2f}x" if then else "-"
            rows.append((f"server CPU per request, c={conns} (ms)", f"{then:.3f}", f"{now:.3f}", ratio))
        for conns in PROFILED:
            rows.append((self._split_label(conns), self._split(BASELINE, conns), self._split(DEFAULT, conns), ""))
        then, now = self.med(BASELINE, 16, "upstream_cpu_ms"), self.med(DEFAULT, 16, "upstream_cpu_ms")
        ratio = f"{now / then:.2f}x" if then else "-"
        rows.append(("direct upstream CPU per request, c=16 (ms)", f"{then:.3f}", f"{now:.3f}", ratio))
        return rows

    def baseline_config(self) -> str:
        return self.baseline.config_note(route_egress_keys=self.baseline_route_egress_keys) if self.baseline else ""

    def targets(self, target: str = DEFAULT) -> list[Verdict]:
        """Issue 16's hot-path targets judged on ``target``: the latency p50 it adds to the direct
        upstream's at c=1 (:data:`TARGET_ADDED_P50_MS`), its CPU per call at each concurrency of
        :data:`TARGET_CPU_MS`."""
        added = self.med(target, 1, "p50_ms") - self.med("direct", 1, "p50_ms")
        out: list[Verdict] = [
            (f"added latency p50 at c=1 <= {TARGET_ADDED_P50_MS:g} ms", f"{added:.3f} ms", added <= TARGET_ADDED_P50_MS)
        ]
        for conns, limit in TARGET_CPU_MS.items():
            cpu = self.med(target, conns, "server_cpu_ms")
            out.append((f"Bastion CPU per tools/call <= {limit:g} ms at c={conns}", f"{cpu:.3f} ms", cpu <= limit))
        return out

    def invalid(self) -> list[Run]:
        """The runs, the scaling rows' too, that had errors or completed no call."""
        scaling = self.scaling.runs() if self.scaling is not None else []
        return [r for r in (*self.runs, *scaling) if r.errors or r.calls == 0]

    HEADER = (
        "",
        "direct",
        "through Bastion (default: audit synchronous=full)",
        "Bastion, audit synchronous=normal",
        "Bastion vs direct: default / normal",
    )
