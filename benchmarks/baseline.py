"""``--baseline REF``: the commit REF names, and its ``src/`` extracted with ``git archive``."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from processes import Prerequisite
from scenario import REPO

TITLE_CHARS = 60
"""A baseline commit's subject line is cut to about this many characters in table headers."""


@dataclass(frozen=True)
class BaselineCommit:
    """The commit ``--baseline REF`` names: measured as one more Bastion, in the default configuration."""

    ref: str
    commit: str  # full hash
    subject: str

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def title(self) -> str:
        """``Bastion at <short> (<subject>)``, the subject cut to about ``TITLE_CHARS`` characters."""
        subject = self.subject if len(self.subject) <= TITLE_CHARS else self.subject[: TITLE_CHARS - 1].rstrip() + "…"
        return f"Bastion at {self.short} ({subject})"

    def config_note(self, *, route_egress_keys: bool) -> str:
        """Which configuration the baseline ran: the default Bastion's, or that without the route keys
        its commit does not know (see :meth:`BastionServer.write_checked_config`)."""
        if route_egress_keys:
            return "the same config as the default Bastion"
        return f"config without routes[].http.allow_http/allow, which {self.short} does not know"


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=60)


def resolve_baseline(ref: str) -> BaselineCommit:
    """The commit ``ref`` names and its subject line; raises ``Prerequisite`` if it names none."""
    if ref.startswith("-"):  # git would read it as an option
        raise Prerequisite(f"--baseline {ref}: not a git ref")
    resolved = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise Prerequisite(f"--baseline {ref}: not a commit in {REPO}")
    commit = resolved.stdout.strip()
    return BaselineCommit(ref=ref, commit=commit, subject=git("log", "-1", "--format=%s", commit).stdout.strip())


def extract_source(commit: str, dest: Path) -> Path:
    """``git archive <commit> src | tar -x -C dest``; returns the extracted ``dest/src``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", commit, "src"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    untar = subprocess.Popen(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, stderr=subprocess.PIPE)
    if archive.stdout is not None:
        archive.stdout.close()  # tar holds the pipe now: git gets SIGPIPE if tar stops reading
    tar_errors = untar.communicate(timeout=120)[1]
    archive_errors = archive.communicate(timeout=120)[1]
    if archive.returncode != 0 or untar.returncode != 0:
        raise Prerequisite(
            f"git archive {commit} src | tar -x failed ({archive.returncode}/{untar.returncode}): "
            f"{(archive_errors + tar_errors).decode(errors='replace').strip()[-500:]}"
        )
    return dest / "src"
