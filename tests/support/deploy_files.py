"""The deployment files as the tests read them: the container image (``deploy/Dockerfile``, parsed
with BuildKit's own parser through the ``dockerfile`` package) and the Kubernetes manifests
(``deploy/kubernetes``), with what a container of the Deployment would see: its command line
(Kubernetes' ``command``/``args`` over the image's ``ENTRYPOINT``/``CMD``), its environment and
the files of its ConfigMap volume as they are mounted."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import yaml

__all__ = [
    "DOCKERFILE",
    "KUBERNETES",
    "REPO",
    "Stage",
    "config_text",
    "container",
    "container_command",
    "dockerfile_stages",
    "image_env",
    "loopback_config",
    "manifest_files",
    "mount_config_volume",
    "resource",
    "resources",
]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
KUBERNETES = REPO / "deploy" / "kubernetes"


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of the Dockerfile and the instructions up to the next."""

    base: str
    name: str | None
    instructions: tuple[dockerfile.Command, ...]

    def commands(self, cmd: str) -> list[dockerfile.Command]:
        return [instruction for instruction in self.instructions if instruction.cmd == cmd.upper()]

    def last(self, cmd: str) -> dockerfile.Command | None:
        found = self.commands(cmd)
        return found[-1] if found else None


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages of ``path``, in order (instructions before the first ``FROM`` dropped)."""
    stages: list[Stage] = []
    base, name, current = "", None, []
    for instruction in dockerfile.parse_file(str(path)):
        if instruction.cmd == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(current)))
            words = instruction.value
            base = words[0]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        elif base:
            current.append(instruction)
    if base:
        stages.append(Stage(base, name, tuple(current)))
    return stages


def image_env(stage: Stage, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment ``stage``'s ``ENV`` lines build on ``base_env`` (``$NAME`` and ``${NAME}``
    expanded from what is set so far, as the builder does)."""
    env = dict(base_env)
    for instruction in stage.commands("ENV"):
        words = instruction.value
        for key, value in zip(words[::2], words[1::2], strict=True):
            for name, known in sorted(env.items(), key=lambda item: -len(item[0])):
                value = value.replace("${" + name + "}", known).replace("$" + name, known)
            env[key] = value
    return env


def container_command(stage: Stage, spec: Mapping[str, Any]) -> list[str]:
    """The process a container of ``spec`` runs from the image whose last stage is ``stage``:
    ``command`` replaces the ``ENTRYPOINT`` (and drops the ``CMD``), ``args`` replace the ``CMD``."""
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    if entrypoint is None or not entrypoint.json:
        raise ValueError("the final stage needs an ENTRYPOINT in exec (JSON) form")
    if cmd is not None and not cmd.json:
        raise ValueError("the final stage's CMD must be in exec (JSON) form")
    if "command" in spec:
        return [*spec["command"], *spec.get("args", ())]
    return [*entrypoint.value, *spec.get("args", cmd.value if cmd is not None else ())]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest in ``deploy/kubernetes`` (``kustomization.yaml`` excluded)."""
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def resources(path: Path) -> list[dict[str, Any]]:
    """The documents of one manifest file."""
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def _all_resources() -> Iterator[dict[str, Any]]:
    for path in manifest_files():
        yield from resources(path)


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of ``kind`` (and ``name``); ``LookupError`` if there is not exactly one."""
    found = [r for r in _all_resources() if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    if len(found) != 1:
        raise LookupError(f"{len(found)} manifests of kind {kind} named {name or 'anything'}")
    return found[0]


def container(name: str = "bastion") -> dict[str, Any]:
    """The container ``name`` of the Deployment."""
    pod = resource("Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def config_text() -> str:
    """``bastion.yaml`` of the ConfigMap."""
    text: str = resource("ConfigMap")["data"]["bastion.yaml"]
    return text


def mount_config_volume(root: Path) -> dict[str, Path]:
    """Write the files of the ConfigMap volume under ``root`` as the Deployment mounts them (its
    ``items`` say which key lands at which path); returns ``{mount path: directory}``."""
    pod = resource("Deployment")["spec"]["template"]["spec"]
    mounts: dict[str, Path] = {}
    for volume in pod["volumes"]:
        if "configMap" not in volume:
            continue
        data = resource("ConfigMap", volume["configMap"]["name"])["data"]
        items = volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]
        target = root / volume["name"]
        for item in items:
            (target / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (target / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        for mount in container()["volumeMounts"]:
            if mount["name"] == volume["name"]:
                mounts[mount["mountPath"]] = target
    return mounts


def loopback_config(text: str, *, port: int, data_dir: Path, postgres_url: str, schema: str, redis_url: str,
                    prefix: str) -> dict[str, Any]:  # fmt: skip
    """``text`` (the ConfigMap's ``bastion.yaml``) moved to this machine: listening on 127.0.0.1:``port``,
    its data in ``data_dir``, PostgreSQL and Redis the loopback ones (trust auth: no password; a
    schema and key prefixes of the test's own). Everything else stays as shipped."""
    config: dict[str, Any] = yaml.safe_load(text)
    config["server"] = {**config["server"], "host": "127.0.0.1", "port": port}
    config["data_dir"] = str(data_dir)
    stores = config["stores"]
    if "postgres" in stores:
        stores["postgres"] = {**stores["postgres"], "url": postgres_url, "schema": schema}
        stores["postgres"].pop("password", None)
    if "redis" in stores:
        stores["redis"] = {**stores["redis"], "url": redis_url, "prefix": f"{prefix}sessions:"}
        stores["redis"].pop("password", None)
    counters = config.get("counters", {})
    if "redis_url" in counters:
        counters.update(redis_url=redis_url, prefix=f"{prefix}rate:")
        counters.pop("redis_password", None)
    return config
