"""The processes measured: the echo upstream and each ``bastion serve`` (its config, data directory,
port, token and CLI, this checkout's or an earlier commit's), started and stopped together."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from baseline import BaselineCommit, extract_source
from load import Endpoint
from processes import Prerequisite, Server, free_port, stop, wait_http
from scenario import BASELINE, BENCH, BIN, DEFAULT, GROUP, POLICIES, ROUTE, SYNCHRONOUS, TARGETS

BASTION = str(BIN / "bastion")
CLI_MAIN = "import sys; from bastion.cli import main; sys.exit(main())"
"""``python -c`` source running the ``bastion`` CLI of whichever ``bastion`` package is first on sys.path."""


@dataclass
class BastionServer(Server):
    """One ``bastion serve`` process: its own config, data directory, port and token.

    It runs this checkout's Bastion (the ``bastion`` script of this venv) unless ``source`` is
    set: then the ``src`` directory of an earlier commit's extracted tree, whose CLI runs as this
    Python with ``PYTHONPATH=source`` (see :attr:`command` and :attr:`env`)."""

    name: str  # DEFAULT, NORMAL or BASELINE
    workdir: Path
    port: int
    synchronous: str
    source: Path | None = None
    routes: int = 1
    extra: str = ""
    """YAML added to the config before ``routes:`` (top-level keys, e.g. ``stores:``)."""
    """Routes in the config, all to the echo upstream: ``routes - 1`` others (``echo-001``, ...,
    each to its own path of it) before ``ROUTE``, the one measured and the token's audience."""
    public_url: str = ""
    """``server.public_url`` when set: replicas behind one load balancer share it (the tokens' audience)."""
    route_egress_keys: bool = True
    """Whether the config sets ``routes[].http.allow_http`` and ``allow``; cleared by
    :meth:`write_checked_config` for a commit older than those keys (its config rejects unknown keys)."""
    route_inventory_keys: bool = True
    """Whether the config sets ``routes[].trust_annotations``; cleared likewise for a commit older than
    it, which judges the echo tool by its annotations anyway (the same decision)."""
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp/{ROUTE}"

    @property
    def command(self) -> list[str]:
        """The ``bastion`` CLI of this server, to which its arguments are appended."""
        return [BASTION] if self.source is None else [sys.executable, "-c", CLI_MAIN]

    @property
    def env(self) -> dict[str, str] | None:
        """The environment of this server's processes: this one (None), or with ``PYTHONPATH=source``."""
        return None if self.source is None else {**os.environ, "PYTHONPATH": str(self.source)}

    def write_config(self, upstream_url: str) -> None:
        # The default configuration leaves ``audit.synchronous`` out (it is ``full``); the
        # variant sets it, and nothing else differs.
        audit = "  store_arguments: true\n" + (
            f"  synchronous: {self.synchronous}\n" if self.synchronous != "full" else ""
        )
        egress = (
            "      allow_http: true                 # the echo upstream is plain http on loopback, on purpose\n"
            "      allow: [127.0.0.1]\n"
            if self.route_egress_keys
            else ""
        )
        inventory = (
            "    trust_annotations: true            # the echo tool's annotations (read-only) give its risk\n"
            if self.route_inventory_keys
            else ""
        )

        def route(name: str, title: str, url: str) -> str:
            return f"  - name: {name}\n    title: {title}\n{inventory}    http:\n      url: {url}\n{egress}"

        others = "".join(
            route(f"{ROUTE}-{i:03d}", f"Echo server {i}", f"{upstream_url}/{i:03d}") for i in range(1, self.routes)
        )
        public = f"  public_url: {self.public_url}\n" if self.public_url else ""
        config = f"""\
# Written by benchmarks/run.py
data_dir: {self.workdir / f"data-{self.name}"}
server:
  host: 127.0.0.1
  port: {self.port}
{public}identity:
  max_token_ttl: 1h
policy:
  files: [{self.workdir / "policies.cedar"}]
audit:
{audit}{self.extra}routes:
{others}{route(ROUTE, "Benchmark echo server", upstream_url)}"""
        self.config_path.write_text(config, encoding="utf-8")

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion in this server's working directory and environment, output captured."""
        return subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=self.workdir, env=self.env, timeout=60
        )

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """``bastion check --config`` of this server's own CLI on its config file."""
        return self.run([*self.command, "check", "--config", str(self.config_path)])

    def write_checked_config(self, upstream_url: str) -> None:
        """:meth:`write_config`, checked by this server's own ``bastion check``: a commit older than
        ``routes[].trust_annotations`` or ``routes[].http.allow_http``/``allow`` rejects them, so on a
        refusal the config is written again without the newer keys, then without both (see
        :attr:`route_inventory_keys`, :attr:`route_egress_keys`). Raises ``Prerequisite`` if all fail."""
        for self.route_egress_keys, self.route_inventory_keys in ((True, True), (True, False), (False, False)):
            self.write_config(upstream_url)
            check = self.check_config()
            if check.returncode == 0:
                return
        raise Prerequisite(
            f"{self.name}: `bastion check` refuses the benchmark config, with and without "
            f"routes[].trust_annotations and routes[].http.allow_http/allow ({self.config_path}):\n"
            f"{(check.stdout + check.stderr).strip()}"
        )

    def verify_source(self) -> None:
        """Check that this server's processes import ``bastion`` from ``source`` (PYTHONPATH takes
        precedence over the venv's editable install); raise ``Prerequisite`` if they do not."""
        if self.source is None:
            return
        probe = self.run([sys.executable, "-c", "import bastion; print(bastion.__file__)"])
        imported = probe.stdout.strip()
        if probe.returncode != 0 or not Path(imported).resolve().is_relative_to(self.source.resolve()):
            raise Prerequisite(
                f"{self.name}: with PYTHONPATH={self.source}, Python imports bastion from "
                f"{imported or '(nothing)'} instead of {self.source}: {probe.stderr.strip()[-500:]}"
            )

    def start(self) -> None:
        self.spawn([*self.command, "serve", "--config", str(self.config_path), "--log-level", "warning"], self.env)
        self.wait_ready("/healthz")
        self.token = self.mint()

    def mint(self) -> str:
        args = [
            *self.command,
            "token",
            "mint",
            "--config",
            str(self.config_path),
            "--sub",
            "bench-user",
            "--route",
            ROUTE,
            "--group",
            GROUP,
            "--email",
            "bench@example.com",
            "--ttl",
            "1h",
        ]
        done = self.run(args)
        done.check_returncode()
        return done.stdout.strip()


@dataclass
class FloorServer(Server):
    """``benchmarks/floor_app.py``: Bastion's HTTP server, upstream client and audit log with none of its
    checks, in front of the echo upstream (see that module)."""

    name: str
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, upstream_url: str) -> None:
        data = self.workdir / f"{self.name}-data"
        self.spawn([sys.executable, str(BENCH / "floor_app.py"), "--port", str(self.port), "--upstream", upstream_url,
                    "--data", str(data)])  # fmt: skip
        self.wait_ready("/healthz")


class Targets:
    """The echo upstream and the Bastions (two of this checkout, the second only with ``normal``, and
    with ``baseline`` one of an earlier commit), running; ``load.measure`` measures one run against
    the :meth:`endpoint` of one of them."""

    def __init__(self, workdir: Path, baseline: BaselineCommit | None = None, *, normal: bool = True) -> None:
        self.workdir = workdir
        self.echo_port = free_port()
        self.echo: subprocess.Popen[bytes] | None = None
        self.bastions = {
            name: BastionServer(name, workdir, free_port(), synchronous)
            for name, synchronous in SYNCHRONOUS.items()
            if normal or name == DEFAULT
        }
        self.baseline = baseline
        if baseline is not None:
            source = workdir / BASELINE / "src"  # extracted by start()
            self.bastions[BASELINE] = BastionServer(BASELINE, workdir, free_port(), "full", source=source)

    @property
    def names(self) -> tuple[str, ...]:
        """The targets measured in every round, in ``TARGETS`` order."""
        return tuple(name for name in TARGETS if name == "direct" or name in self.bastions)

    @property
    def baseline_route_egress_keys(self) -> bool:
        """Whether the baseline's config has ``routes[].http.allow_http``/``allow`` (True without a baseline)."""
        baseline = self.bastions.get(BASELINE)
        return baseline is None or baseline.route_egress_keys

    @property
    def default(self) -> BastionServer:
        """The Bastion in the default configuration: the one profiled and judged against the targets."""
        return self.bastions[DEFAULT]

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.echo_port}/mcp"

    def endpoint(self, name: str) -> Endpoint:
        """What wrk measures for target ``name``: ``"direct"`` (the echo upstream alone) or a name in
        :attr:`bastions`, running."""
        if name == "direct":
            return Endpoint(name, self.direct_url, self.echo_pid, self.echo_pid)
        bastion = self.bastions[name]
        return Endpoint(name, bastion.url, bastion.pid, self.echo_pid, bastion.token)

    def start(self) -> None:
        """Start the echo upstream and every Bastion. For the baseline, first extract its commit's
        ``src``, check that it is what its processes import and fit its config to what it knows."""
        if self.baseline is not None:
            extract_source(self.baseline.commit, self.workdir / BASELINE)
            self.bastions[BASELINE].verify_source()
        (self.workdir / "policies.cedar").write_text(POLICIES, encoding="utf-8")
        echo_log = (self.workdir / "echo.log").open("wb")
        self.echo = subprocess.Popen(
            [sys.executable, str(BENCH / "echo_upstream.py"), "--port", str(self.echo_port)],
            stdout=echo_log,
            stderr=subprocess.STDOUT,
        )
        echo_log.close()
        wait_http(self.echo_port, "/healthz", self.echo)
        for bastion in self.bastions.values():
            if bastion.source is None:
                bastion.write_config(self.direct_url)
            else:
                bastion.write_checked_config(self.direct_url)
            bastion.start()

    def add_bastion(self, name: str, routes: int = 1, extra: str = "", public_url: str = "") -> BastionServer:
        """Start one more Bastion of this checkout, ``name``, in the default configuration with
        ``routes`` routes to the echo upstream (see :attr:`BastionServer.routes`) and ``extra`` YAML
        (:attr:`BastionServer.extra`) and ``public_url`` (:attr:`BastionServer.public_url`), after :meth:`start`.
        ``load.measure`` measures it by name; it is not in :attr:`names` (the rounds), and
        :meth:`stop_bastion` or :meth:`stop` stops it."""
        bastion = BastionServer(name, self.workdir, free_port(), "full", routes=routes, extra=extra,
                                public_url=public_url)  # fmt: skip
        self.bastions[name] = bastion
        bastion.write_config(self.direct_url)
        bastion.start()
        return bastion

    def start_floor(self, name: str) -> FloorServer:
        """Start :class:`FloorServer` ``name`` in front of the echo upstream, after :meth:`start`; the
        caller stops it."""
        floor = FloorServer(name, self.workdir, free_port())
        floor.start(self.direct_url)
        return floor

    def stop_bastion(self, name: str) -> None:
        """Stop the Bastion ``name`` and forget it (its log stays in the working directory)."""
        self.bastions.pop(name).stop()

    def logs(self) -> str:
        return "\n".join(f"--- {b.name} log ---\n{b.log()}" for b in self.bastions.values())

    def stop(self) -> None:
        """Stop every Bastion (the baseline's too) and the echo upstream."""
        for bastion in self.bastions.values():
            bastion.stop()
        if self.echo is not None:
            stop(self.echo)

    @property
    def echo_pid(self) -> int:
        if self.echo is None:
            raise RuntimeError("the echo upstream is not running")
        return self.echo.pid
