"""Where the texts of an MCP message are: the part of a message Bastion scans in results.

Issue 15, "Result inspection and redaction" (``bastion.scan.redaction``). ``texts_of`` lists the
texts of one upstream-to-client message that reach the client and, through it, the model (see
``bastion.scan.redaction`` for which); ``rewritten`` makes a copy of a message part with some of
them replaced, sharing everything else. Shapes follow MCP 2025-11-25 (``CallToolResult``,
``ReadResourceResult``, ``GetPromptResult``, ``LoggingMessageNotification``,
``ProgressNotification``, the server-to-client ``CreateMessageRequest`` and ``ElicitRequest``, and a
JSON-RPC error's ``message`` and ``data``); anything else is not a text.
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import copy
from typing import Any

from bastion.audit.redact import is_secret_key

__all__ = ["Path", "Texts", "rewritten", "texts_of"]

Path = tuple[str | int, ...]


class Texts:
    """The texts of one part of a message (its ``result`` or ``params``) and, when ``track``, where
    each sits: the container holding it and its key there, containers linking to their parent, so
    that a path is built only for a text that changes (a walk that finds nothing places nothing: the
    walk runs again, tracking, when something is to be changed). ``keys`` is the object key naming a
    secret that a text of structured data sits under (for ``checks.keyed_secret``), by text index."""

    def __init__(self, *, track: bool) -> None:
        self.track = track
        self.texts: list[str] = []
        self.where: list[tuple[int, str | int]] = []
        self.keys: dict[int, str] = {}
        self.containers: list[tuple[int, str | int]] = [(-1, "")]  # 0: the part itself

    def container(self, parent: int, key: str | int) -> int:
        """Register the container at ``key`` of container ``parent``; return its id."""
        self.containers.append((parent, key))
        return len(self.containers) - 1

    def add(self, text: str, parent: int, key: str | int) -> None:
        self.texts.append(text)
        self.where.append((parent, key))

    def keyed(self) -> Iterator[tuple[int, str]]:
        """``(text index, object key)`` of the texts of structured data under a key naming a secret."""
        return iter(self.keys.items())

    def path(self, n: int) -> Path:
        """The path of text ``n`` from the part."""
        parent, key = self.where[n]
        path: list[str | int] = [key]
        while parent > 0:
            parent, key = self.containers[parent]
            path.append(key)
        return tuple(reversed(path))

    def tool_result(self, result: dict[str, Any], holder: int) -> None:
        """The texts of a ``CallToolResult`` (container ``holder``): its content blocks and every string
        of ``structuredContent`` (an object per the spec; whatever it is, its strings reach the client)."""
        self.blocks(result.get("content"), holder, "content")
        if "structuredContent" in result:
            self.strings(result["structuredContent"], holder, "structuredContent", keyed=True)

    def blocks(self, blocks: Any, parent: int, key: str | int) -> None:
        """The texts of a list of content blocks at ``key`` of container ``parent``."""
        if type(blocks) is list:
            holder = self.container(parent, key)
            for i, block in enumerate(blocks):
                if type(block) is dict:
                    self.block(block, holder, i)

    def block(self, block: dict[str, Any], parent: int, key: str | int) -> None:
        """The text of one content block: a ``text`` block's ``text``, an embedded ``resource``'s text."""
        kind = block.get("type")
        if kind == "text" and type(block.get("text")) is str:
            self.add(block["text"], self.container(parent, key), "text")
        elif kind == "resource" and type(block.get("resource")) is dict and type(block["resource"].get("text")) is str:
            holder = self.container(self.container(parent, key), "resource")
            self.add(block["resource"]["text"], holder, "text")

    def messages(self, messages: Any, parent: int, key: str | int) -> None:
        """The texts of a list of ``PromptMessage`` / ``SamplingMessage`` at ``key`` of container
        ``parent``: each message's content, one block or a list of blocks."""
        if type(messages) is not list:
            return
        holder = self.container(parent, key)
        for i, item in enumerate(messages):
            content = item.get("content") if type(item) is dict else None
            if type(content) is dict:
                self.block(content, self.container(holder, i), "content")
            else:
                self.blocks(content, self.container(holder, i), "content")

    def strings(self, value: Any, parent: int, key: str | int, *, keyed: bool) -> None:
        """Every string in the JSON value at ``key`` of container ``parent``; with ``keyed``, the
        strings under an object key naming a secret (``is_secret_key``; in a list, the key of the list)
        are noted in ``keys``. Iterative, so depth is no limit; the hot loop of a large structured
        result, hence the local names."""
        if type(value) is str:
            self.add(value, parent, key)
            return
        if type(value) is not dict and type(value) is not list:
            return
        if not self.track:
            self._strings_only(value, keyed=keyed)
            return
        texts, where, containers, keys = self.texts, self.where, self.containers, self.keys
        secret: dict[str, bool] = {}
        stack: list[tuple[Any, int, str | int, str | None]] = [(value, parent, key, None)]
        push, pop = stack.append, stack.pop
        while stack:
            node, above, at, under = pop()
            containers.append((above, at))
            holder = len(containers) - 1
            if type(node) is dict:
                for k, child in node.items():
                    kind = type(child)
                    if kind is str:
                        if keyed:
                            named = secret.get(k)
                            if named is None:
                                named = secret[k] = type(k) is str and is_secret_key(k)
                            if named:
                                keys[len(texts)] = k
                        texts.append(child)
                        where.append((holder, k))
                    elif kind is dict or kind is list:
                        push((child, holder, k, k))
            else:
                named = keyed and under is not None and is_secret_key(under)
                for i, child in enumerate(node):
                    kind = type(child)
                    if kind is str:
                        if named:
                            keys[len(texts)] = under  # type: ignore[assignment]
                        texts.append(child)
                        where.append((holder, i))
                    elif kind is dict or kind is list:
                        push((child, holder, i, under))

    def _strings_only(self, value: Any, *, keyed: bool) -> None:
        """``strings`` without placing them: the same texts in the same order, and the same ``keys``."""
        texts, keys = self.texts, self.keys
        secret: dict[str, bool] = {}
        stack: list[tuple[Any, str | None]] = [(value, None)]
        push, pop = stack.append, stack.pop
        while stack:
            node, under = pop()
            if type(node) is dict:
                for k, child in node.items():
                    kind = type(child)
                    if kind is str:
                        if keyed:
                            named = secret.get(k)
                            if named is None:
                                named = secret[k] = type(k) is str and is_secret_key(k)
                            if named:
                                keys[len(texts)] = k
                        texts.append(child)
                    elif kind is dict or kind is list:
                        push((child, k))
            else:
                named = keyed and under is not None and is_secret_key(under)
                for child in node:
                    kind = type(child)
                    if kind is str:
                        if named:
                            keys[len(texts)] = under  # type: ignore[assignment]
                        texts.append(child)
                    elif kind is dict or kind is list:
                        push((child, under))


def texts_of(message: dict[str, Any], method: str | None, *, track: bool) -> tuple[str, Texts] | None:
    """The key of the part of ``message`` that holds texts (``result`` or ``params``) and its texts
    (placed when ``track``)."""
    texts = Texts(track=track)
    if method is None:
        name = message.get("method")
        params = message.get("params")
        if type(params) is not dict:
            return None
        if name == "notifications/message":
            texts.strings(params.get("data"), 0, "data", keyed=False)
        elif name == "notifications/progress" and type(params.get("message")) is str:
            texts.add(params["message"], 0, "message")
        elif name == "sampling/createMessage":  # what the server puts before the client's model
            texts.messages(params.get("messages"), 0, "messages")
            if type(params.get("systemPrompt")) is str:
                texts.add(params["systemPrompt"], 0, "systemPrompt")
        elif name == "elicitation/create" and type(params.get("message")) is str:  # what the person reads
            texts.add(params["message"], 0, "message")
        else:
            return None
        return "params", texts
    result = message.get("result")
    if type(result) is not dict:
        error = message.get("error")
        if type(error) is not dict:
            return None
        if type(error.get("message")) is str:  # an upstream's error text reaches the model as well
            texts.add(error["message"], 0, "message")
        texts.strings(error.get("data"), 0, "data", keyed=True)
        return "error", texts
    if method == "tools/call":
        texts.tool_result(result, 0)
    elif method == "tasks/get":  # 2026-07-28 tasks extension: a completed task inlines its tools/call result
        if type(result.get("result")) is dict:
            texts.tool_result(result["result"], texts.container(0, "result"))
    elif method == "resources/read":
        contents = result.get("contents")
        if type(contents) is list:
            holder = texts.container(0, "contents")
            for i, item in enumerate(contents):
                if type(item) is dict and type(item.get("text")) is str:
                    texts.add(item["text"], texts.container(holder, i), "text")
    elif method == "prompts/get":
        texts.messages(result.get("messages"), 0, "messages")
    else:
        return None
    return "result", texts


def rewritten(root: Any, changes: dict[Path, str]) -> Any:
    """A copy of ``root`` with the string at each path of ``changes`` replaced; only the containers
    on those paths are copied (shallow), the rest is shared."""
    new_root = copy(root)
    copied: dict[Path, Any] = {(): new_root}
    for path, text in changes.items():
        node = new_root
        for depth in range(1, len(path)):
            prefix = path[:depth]
            child = copied.get(prefix)
            if child is None:
                child = copy(node[path[depth - 1]])
                node[path[depth - 1]] = child
                copied[prefix] = child
            node = child
        node[path[-1]] = text
    return new_root
