"""``server.argument_limits``: how large a call's ``arguments`` may be before Bastion refuses it.

A well-formed but hostile call (an object of 150,000 members, an array of 400,000
elements) costs CPU in every step that touches the arguments: the policy decision, the
digest, redaction, the audit record. These limits bound that work: the transport stage
measures ``params.arguments`` once, right after the body is parsed, and refuses a call
over any limit with JSON-RPC ``-32602`` (HTTP 400) and a deny record that keeps the
arguments' digest and the measured sizes, not the arguments
(``bastion.transport.sizes``). The defaults sit far above what real tools send; the
body itself is capped first by ``server.max_body_bytes``.
"""

from __future__ import annotations

from pydantic import Field

from bastion.config.base import _Model

__all__ = ["ArgumentLimits"]


class ArgumentLimits(_Model):
    """Limits on one request's ``params.arguments`` (any JSON value).

    - ``max_depth``: arrays and objects nested in each other; the arguments object itself is 1
      (at most 60: the whole message may nest 64 deep, ``bastion.transport.checks.MAX_DEPTH``);
    - ``max_members``: members of any one object;
    - ``max_elements``: elements of any one array;
    - ``max_string_chars``: characters (code points) of any one string, object keys included;
    - ``max_nodes``: values in all (every object, array, string, number, boolean, null).
    """

    max_depth: int = Field(default=32, ge=1, le=60)
    max_members: int = Field(default=10_000, ge=1)
    max_elements: int = Field(default=100_000, ge=1)
    max_string_chars: int = Field(default=1_048_576, ge=1)
    max_nodes: int = Field(default=250_000, ge=1)
