"""The Kubernetes manifests of ``deploy/kubernetes`` (issue 17, "Deployment").

Every manifest is validated offline against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package bundles, in their strict form (an unknown field anywhere is an
error), for the newest Kubernetes version it ships and the oldest one still supported upstream;
a control test shows the validator does reject an unknown or mistyped field. The rest checks that
the manifests agree with each other and with Bastion itself: selectors and pod labels, the probes'
port and paths against the configuration's listener and the gateway's real routes, the grace
period against the graceful stop ``bastion serve`` really has (``uvicorn_config``), every secret
reference of the configuration set from the Secret, the volumes a read-only root needs, and the
replica and worker counts against what the configuration can share (``worker_problems``).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.support.deploy_files import (
    KUBERNETES,
    config_text,
    container,
    dockerfile_stages,
    manifest_files,
    mount_config_volume,
    resource,
    resources,
)

from bastion.cli.serving import uvicorn_config
from bastion.cli.workers import worker_problems
from bastion.config import load_config
from bastion.credentials.vault import generate_key
from bastion.gateway import Gateway

KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
"""The oldest Kubernetes minor version still maintained upstream, and the newest the validator ships."""
FLUSH_MARGIN_S = 5
"""Time the grace period leaves after uvicorn's graceful timeout: the lifespan's end (upstreams
closed, the audit queue flushed) and the supervisor of ``--workers`` reaping its workers."""


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resource("Deployment")["spec"]["template"]["spec"]
    return spec


def secret_env_names(node: Any) -> Iterator[str]:
    """Every ``{env: NAME}`` secret reference in a configuration document."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"]
        for value in node.values():
            yield from secret_env_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from secret_env_names(value)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_validates_against_the_strict_kubernetes_schema(path: Path, version: str) -> None:
    documents = resources(path)
    assert documents, f"{path.name} holds no manifest"
    for document in documents:
        # SchemaNotFoundError (an unknown kind or apiVersion) fails the test too.
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("an unknown field in the container", lambda c: c["securityContext"].update(privilegd=False)),
        ("a string where a number belongs", lambda c: c["ports"][0].update(containerPort="eighty")),
        ("a missing required field", lambda c: c.pop("name")),
    ],
)
def test_the_validator_rejects_what_a_cluster_would(where: str, change: Any) -> None:
    deployment = copy.deepcopy(resource("Deployment"))
    change(deployment["spec"]["template"]["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in manifest_files()} - {"secret.example.yaml"}
    assert resource("Secret")["metadata"]["name"] == "bastion-secrets"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_kustomize_renders_manifests_that_validate() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True,
                              check=True, timeout=60).stdout  # fmt: skip
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted(r["kind"] for p in manifest_files() if p.name != "secret.example.yaml" for r in resources(p))
    for document in documents:
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bastion"
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_selector_picks_the_gateway_pods() -> None:
    deployment = resource("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": resource("Service")["spec"]["selector"],
        "PodDisruptionBudget": resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": resource("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} selects every pod"
        assert selector.items() <= labels.items(), f"{kind} does not select the gateway pods"


def test_the_disruption_budget_lets_a_drain_proceed() -> None:
    """One eviction at a time, and never none: with the one pod of today ``minAvailable: 1`` would
    block every node drain."""
    budget = resource("PodDisruptionBudget")["spec"]
    replicas = resource("Deployment")["spec"]["replicas"]
    if "maxUnavailable" in budget:
        assert budget["maxUnavailable"] == 1
    else:
        assert budget["minAvailable"] < replicas


def test_the_probes_reach_the_configured_listener_and_real_routes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    gateway = built_gateway(tmp_path, monkeypatch)
    server = yaml.safe_load(config_text())["server"]
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    routes = {getattr(route, "path", None) for route in gateway.app.fallback.routes}
    probes = {name: container()[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for name, probe in probes.items():
        assert ports.get(probe["port"], probe["port"]) == server["port"], f"{name} probes another port"
        assert probe["path"] in routes, f"{name} probes {probe['path']}, which Bastion does not serve"
    assert server["host"] == "0.0.0.0"  # noqa: S104 - in the pod: the kubelet and the Service must reach it
    service_port = resource("Service")["spec"]["ports"][0]["targetPort"]
    assert ports.get(service_port, service_port) == server["port"]
    network_ports = [port["port"] for rule in resource("NetworkPolicy")["spec"]["ingress"] for port in rule["ports"]]
    assert all(ports.get(port, port) == server["port"] for port in network_ports)


def test_the_grace_period_covers_the_graceful_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timeout = uvicorn_config(built_gateway(tmp_path, monkeypatch)).timeout_graceful_shutdown
    assert timeout is not None
    pre_stop = container().get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + timeout + FLUSH_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + graceful timeout {timeout} + {FLUSH_MARGIN_S}"
    )


def test_every_secret_the_configuration_references_comes_from_the_secret() -> None:
    names = set(secret_env_names(yaml.safe_load(config_text())))
    assert "BASTION_VAULT_KEY" in names
    env = {entry["name"]: entry for entry in container()["env"]}
    example = resource("Secret")["stringData"]
    for name in names:
        assert name in env, f"{name} is referenced by bastion.yaml but not set in the Deployment"
        reference = env[name].get("valueFrom", {}).get("secretKeyRef")
        assert reference is not None, f"{name} must come from a Secret, not a literal"
        assert reference["name"] == "bastion-secrets"
        assert reference["key"] in example, f"secret.example.yaml lacks the key {reference['key']}"


def test_the_pod_is_non_root_with_a_read_only_root_and_writable_volumes() -> None:
    pod, spec = pod_spec(), container()
    final = dockerfile_stages()[-1]
    user = final.last("USER")
    assert user is not None
    uid = int(user.value[0].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    if "fsGroup" in pod["securityContext"]:  # "Always" would make the key files group-readable: refused
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["automountServiceAccountToken"] is False
    context = spec["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert {"cpu", "memory"} <= spec["resources"]["requests"].keys()
    assert "memory" in spec["resources"]["limits"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = {m["mountPath"] for m in spec["volumeMounts"]
                if not m.get("readOnly") and "configMap" not in volumes[m["name"]]}  # fmt: skip
    data_dir = yaml.safe_load(config_text())["data_dir"]
    env = {instruction.value[i]: instruction.value[i + 1] for instruction in final.commands("ENV")
           for i in range(0, len(instruction.value), 2)}  # fmt: skip
    assert {data_dir, "/tmp", env["HOME"]} <= writable
    data_volume = volumes[next(m["name"] for m in spec["volumeMounts"] if m["mountPath"] == data_dir)]
    assert "persistentVolumeClaim" in data_volume, "the data directory (signing keys, vault) must persist"
    claim = resource("PersistentVolumeClaim", data_volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_replicas_and_workers_are_what_the_configuration_can_share(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """More than one pod only with ``stores.shared: true`` (``bastion check`` then refuses any store
    left embedded); ``--workers N`` only where ``worker_problems`` finds nothing, and no more
    workers than the pod's CPU limit."""
    deployment = resource("Deployment")
    if deployment["spec"]["replicas"] > 1:
        assert yaml.safe_load(config_text())["stores"].get("shared") is True
    else:
        assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one pod owns the ReadWriteOnce volume
    args = container().get("args", [])
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    if workers > 1:
        assert worker_problems(built_gateway(tmp_path, monkeypatch).config) == []
    cpu = str(container()["resources"]["limits"]["cpu"])
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert workers <= max(1, cores)


def built_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """The gateway ``bastion serve`` builds from the ConfigMap's configuration, mounted as the pod
    mounts it (its data directory in ``tmp_path``, secrets set to test values); built only,
    nothing started or connected."""
    mounts = mount_config_volume(tmp_path)
    config_path = mounts["/etc/bastion"] / "bastion.yaml"
    document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    for name in secret_env_names(document):
        monkeypatch.setenv(name, generate_key() if name == "BASTION_VAULT_KEY" else f"test-{name.lower()}")
    document["data_dir"] = str(tmp_path / "data")
    config_path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return Gateway(load_config(config_path))
