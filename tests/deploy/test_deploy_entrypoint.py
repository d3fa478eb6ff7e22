"""The container as a process (issue 17, "Deployment"): this machine cannot build the image, so
the tests run what the image would run, the way Kubernetes would run it.

- ``bastion check`` on the ConfigMap's ``bastion.yaml``, mounted as the Deployment mounts it, with
  the environment the Deployment gives it (each Secret key set to a test value); without one of
  them, the check fails naming it.
- The entrypoint: the command line of the image (``ENTRYPOINT`` + ``CMD``, parsed from
  ``deploy/Dockerfile``) and of the Deployment (its ``args`` in place of the ``CMD``), with the
  image's ``ENV`` and the Deployment's ``env`` and nothing else, cwd ``/``; the image's paths
  are mapped to this machine (``/opt/bastion`` to this virtual environment, ``/etc/bastion`` to
  the ConfigMap's files, ``/var/lib/bastion`` and ``/tmp`` to empty directories) and, where the
  kernel lets us (``unshare`` of a mount namespace, as root), the root filesystem is read-only
  for the process except those two directories, as ``readOnlyRootFilesystem`` makes it. The
  configuration is the ConfigMap's with its listener and services moved to loopback
  (``loopback_config``: the PostgreSQL and Redis of this machine). It must become ready (every
  probe of the Deployment answers 200), run the number of workers the command asks for, and on
  SIGTERM finish its shutdown (every worker) within the grace period.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from tests.support.bastion_process import free_port, stop
from tests.support.databases import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schema,
    postgres_schema,
)
from tests.support.deploy_files import (
    container,
    container_command,
    dockerfile_stages,
    image_env,
    loopback_config,
    mount_config_volume,
    resource,
)

from bastion.credentials.vault import generate_key

pytestmark = pytest.mark.e2e

BASE_IMAGE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""What the python base image's own ENV sets before ours."""
CONFIG_MOUNT = "/etc/bastion"


def secret_env() -> dict[str, str]:
    """The Deployment's ``env``, each Secret key a test value (the vault key a real one)."""
    env = {}
    for entry in container()["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            key = entry["valueFrom"]["secretKeyRef"]["key"]
            env[entry["name"]] = generate_key() if key == "vault-key" else f"test-{key}"
    return env


def read_only_root_available() -> bool:
    """Whether this process may give a child a mount namespace with a read-only root (root, and a
    kernel and sandbox that allow ``unshare --mount``)."""
    if os.geteuid() != 0:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro / && true"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


READ_ONLY_SCRIPT = " && ".join(
    ['mount --bind "$1" "$1"', 'mount --bind "$2" "$2"', "mount -o remount,bind,ro /", "shift 2", 'exec "$@"']
)
"""Keep the data and temp directories writable (their own mounts), make the root read-only, then
run the container's command in place of this shell (same pid: SIGTERM reaches Bastion)."""


def test_the_read_only_root_refuses_writes_but_to_the_volumes(tmp_path: Path) -> None:
    """The control of the mimic: in it, the data and temp directories take a file, a path next to
    them (on the same filesystem) does not."""
    if not read_only_root_available():
        pytest.skip("no mount namespace for a read-only root here (not root, or unshare refused)")
    data, scratch, beside = tmp_path / "data", tmp_path / "tmp", tmp_path / "beside"
    for directory in (data, scratch, beside):
        directory.mkdir()
    writes = "; ".join(f"open({str(d / 'probe')!r}, 'w').close()" for d in (data, scratch, beside))
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_SCRIPT, "sh",
               str(data), str(scratch), sys.executable, "-c", writes]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=60)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert (data / "probe").exists()
    assert (scratch / "probe").exists()
    assert not (beside / "probe").exists()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema and a Redis key prefix of the test's own, removed afterwards."""
    prefix = f"bastion-deploy:{uuid.uuid4().hex}:"
    yield postgres_schema(tmp_path), prefix
    asyncio.run(drop_postgres_schema(tmp_path))
    asyncio.run(delete_redis_keys(prefix))


class Pod:
    """The paths the container sees, on this machine."""

    def __init__(self, root: Path) -> None:
        self.mounts = mount_config_volume(root)
        self.data = root / "var-lib-bastion"
        self.tmp = root / "tmp"
        for directory in (self.data, self.tmp):
            directory.mkdir(mode=0o700)
        self.paths = {**self.mounts, "/var/lib/bastion": self.data, "/tmp": self.tmp, "/opt/bastion": Path(sys.prefix)}

    def host(self, value: str) -> str:
        """``value`` (a word or a PATH-like list) with the image's paths replaced by this machine's."""
        return ":".join(self._host_path(part) for part in value.split(":"))

    def _host_path(self, path: str) -> str:
        for image_path, host_path in sorted(self.paths.items(), key=lambda item: -len(item[0])):
            if path == image_path or path.startswith(image_path + "/"):
                return str(host_path) + path[len(image_path) :]
        return path

    @property
    def config_path(self) -> Path:
        return self.mounts[CONFIG_MOUNT] / "bastion.yaml"


def check(pod: Pod, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    final = dockerfile_stages()[-1]
    environment = {key: pod.host(value) for key, value in image_env(final, BASE_IMAGE_ENV).items()} | env
    command = ["bastion", "check", "--config", pod.host(f"{CONFIG_MOUNT}/bastion.yaml")]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/", timeout=120)


def test_the_configmap_configuration_passes_bastion_check(tmp_path: Path) -> None:
    result = check(Pod(tmp_path), secret_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith("OK")
    assert "PostgreSQL" in result.stdout
    assert "Redis" in result.stdout


@pytest.mark.parametrize("missing", [entry["name"] for entry in container()["env"] if "valueFrom" in entry])
def test_bastion_check_names_a_secret_the_pod_lacks(tmp_path: Path, missing: str) -> None:
    env = secret_env()
    del env[missing]
    result = check(Pod(tmp_path), env)
    assert result.returncode != 0
    assert missing in result.stdout + result.stderr


def worker_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the container's process exited with {proc.returncode} before it was ready")
        try:
            response = httpx2.get(url, timeout=5)
            last = response.json()
            if response.status_code == 200:
                return dict(last)
        except httpx2.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout_s}s: {last}")


def wait_every_worker_serving(url: str, pids: set[int], timeout_s: float = 90.0) -> None:
    """Ask ``url`` (``/healthz``, which names the answering process) on new connections until every
    worker in ``pids`` has answered: each finished starting, so a SIGTERM finds none mid-start."""
    answered: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while answered != pids:
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {sorted(pids - answered)} never answered {url}")
        try:
            answered.add(httpx2.get(url, timeout=5).json()["pid"])
        except httpx2.HTTPError:
            time.sleep(0.1)


@pytest.mark.parametrize("how", ["image", "deployment"])
def test_the_container_entrypoint_serves_and_drains(tmp_path: Path, services: tuple[str, str], how: str) -> None:
    """``image``: ENTRYPOINT + CMD as ``docker run`` would; ``deployment``: the Deployment's args."""
    schema, prefix = services
    pod, port = Pod(tmp_path / "pod"), free_port()
    shipped = pod.config_path.read_text(encoding="utf-8")
    config = loopback_config(shipped, port=port, data_dir=Path("/var/lib/bastion"), postgres_url=POSTGRES_URL,
                             schema=schema, redis_url=REDIS_URL, prefix=prefix)  # fmt: skip
    config["data_dir"] = pod.host(config["data_dir"])
    pod.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    final = dockerfile_stages()[-1]
    command = [pod.host(word) for word in container_command(final, container() if how == "deployment" else {})]
    env = {key: pod.host(value) for key, value in image_env(final, BASE_IMAGE_ENV).items()} | secret_env()
    workers = int(command[command.index("--workers") + 1]) if "--workers" in command else 1
    read_only = read_only_root_available()
    if read_only:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_SCRIPT, "sh",
                   str(pod.data), str(pod.tmp), *command]  # fmt: skip
    log_path = tmp_path / "container.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            body = wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        except (RuntimeError, TimeoutError) as exc:
            output = log_path.read_text(errors="replace")
            raise AssertionError(f"{exc}\n--- the container's output ---\n{output}") from exc
        assert body["status"] == "ready"
        assert {"postgres", "sessions (redis)"} <= body["checks"].keys()
        for name in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container()[name]["httpGet"]["path"]
            assert httpx2.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200, name
        if workers > 1:
            pids = worker_pids(proc.pid)
            assert len(pids) == workers
            wait_every_worker_serving(f"http://127.0.0.1:{port}/healthz", set(pids))
        assert (pod.data / "signing-keys.json").exists()

        pod_spec = resource("Deployment")["spec"]["template"]["spec"]
        pre_stop = container().get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        budget = pod_spec["terminationGracePeriodSeconds"] - pre_stop
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=budget)
        elapsed = time.monotonic() - started
    finally:
        stop(proc)
    log = log_path.read_text(errors="replace")
    # uvicorn re-raises the signal once its shutdown is complete (so `bastion serve` ends "by SIGTERM",
    # exit status 143 in Kubernetes); the supervisor of --workers exits 0. Either way, every gateway
    # process ran its lifespan's end: the audit queue flushed, the stores closed.
    assert returncode in (0, -signal.SIGTERM), log
    assert log.count("Application shutdown complete.") == workers, log
    assert elapsed < budget
    assert "Traceback" not in log, log
    assert "Read-only file system" not in log, log
