"""What a definition's text tells the model to do: the language signals of tool poisoning.

Each signal is a class of wording that an attack needs, not a known sample's phrase: it must
address the model (``you must``, ``before using this tool``), hide what it does from the person
(``do not mention``, ``present it as if``), reach data the tool has no business with
(``~/.ssh``, the system prompt, the conversation), move data out (``pass its content as``,
``send ... to https://``), or steer other tools (``when the send_email tool is used``, ``replace
the recipient``). ``signals`` finds them in folded text (``bastion.scan.unicode.fold``: lower
case, look-alikes mapped, invisible characters removed); ``bastion.scan.definitions`` weighs
them into findings: one signal alone is at most medium, an attack's combination is high.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

__all__ = ["Signal", "signals", "tool_mentions"]

# A clause: no sentence end in between ("." "!" "?" before a space or the end, or a newline); a
# dot inside a path or address (``~/.ssh/id_rsa``, ``a.example``) does not end it.
_C = r"(?:[^.!?\n]|[.!?](?=\S))"


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Strong on their own: an attack on the model, no benign definition needs them.
OVERRIDE = _rx(
    rf"\b(?:ignore|disregard|forget|override|bypass)\b{_C}{{0,40}}?\b(?:previous|prior|above|earlier|preceding|other|"
    rf"all|any|existing|original|system|safety|security|your)\b{_C}{{0,30}}?\b(?:instructions?|prompts?|rules?|"
    r"guidelines?|directions?|guardrails?|restrictions?|polic(?:y|ies)|tools?|descriptions?|messages?|constraints?)\b"
    r"|\byou are now\b|\bfrom now on,? you\b|\bnew (?:system )?instructions?\s*:|\bsystem override\b"
    r"|\b(?:you are|enter|switch to|now in|entering)\b(?: \w+){0,2} (?:developer|diagnostic|god|jailbreak|unrestricted"
    r"|dan|maintenance) mode\b|\bact as (?:an? )?(?:unrestricted|unfiltered|different)\b"
)
CHAT_TOKEN = _rx(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|\[/?inst\]|<</?sys>>"
    r"|(?:^|\n)#{1,4} ?(?:system|instructions?) ?:"
)
CONCEAL = _rx(
    # keep the person from knowing
    r"\b(?:do not|don't|dont|never|must not|should not|shouldn't|without)\b"
    rf"{_C}{{0,12}}?\b(?:tell(?:ing)?|inform(?:ing)?"
    rf"|notify(?:ing)?|alert(?:ing)?|warn(?:ing)?|ask(?:ing)?|let(?:ting)?{_C}{{0,10}}? know)\b{_C}{{0,12}}?"
    r"\b(?:the |any )?(?:user|human|person|operator|customer|owner)s?\b"
    rf"|\b(?:do not|don't|dont|never|must not|should not)\b{_C}{{0,12}}?\b(?:mention|reveal|disclose|say|indicate|"
    r"acknowledge|explain|state|report|show|admit)\b(?: explicitly)?(?: to the user)?,? (?:that|this|these|how|why|"
    r"what|you(?:'re| are| have|'ve| will)?|it|any of this|the (?:instructions?|steps?|requests?|fact|above|"
    r"(?:file|data|secret|key|credential|password)s?))\b"
    r"|\b(?:hidden|invisible|not visible|secret) (?:from|to) the (?:user|human)\b"
    r"|\b(?:the )?(?:user|human) (?:will|must|should|does|do|need|needs)(?: not|n't)(?: to)? (?:see|know|notice|learn|"
    r"be (?:told|informed|aware|notified))\b"
    r"|\b(?:could|might|would|will|may) (?:upset|alarm|worry|scare|confuse|concern|bother) the (?:user|human)\b"
    r"|\bnot to (?:alarm|worry|upset|scare|concern) the (?:user|human)\b"
    r"|\b(?:keep|remain|stay) (?:this|it|these) (?:secret|hidden|quiet|confidential) from\b"
    r"|\b(?:no need|not necessary|unnecessary|needless) to (?:mention|tell|inform|bring(?: \w+)? up|explain|report|"
    r"notify|say|bother)\b"
    r"|\bwithout (?:asking|prompting|consulting|confirming with|the (?:user|human)'?s? (?:consent|approval|permission|"
    r"knowledge))\b"
    rf"|\b(?:skip|bypass|avoid|suppress)\b{_C}{{0,12}}?\b(?:confirmation|approval|consent|permission)s?\b"
    rf"|\b(?:do not|don't|never)\b{_C}{{0,10}}?\bask\b{_C}{{0,12}}?\bfor (?:confirmation|approval|consent|permission)\b"
)
DECEIVE = _rx(
    rf"\bpresent(?:ing)? (?:it|this|them|these|the {_C}{{0,30}}?) as (?:if|though|part of|a normal|normal|the result)\b"
    r"|\bmake (?:it|them|this|these) (?:look|appear|seem) (?:like|as|normal|legitimate|innocent)\b"
    r"|\b(?:format|disguise|hide|mask|conceal|camouflage|blend)\b"
    rf"{_C}{{0,30}}?\b(?:to look like|so (?:that )?(?:it|they) (?:look|looks|appear|appears)|as if|among)\b"
    r"|\bpretend(?:ing)? (?:that|to be|you)\b"
    r"|\bas if (?:it|this|they)(?:'s| is| are| were| was) (?:part of|normal|coming from)\b"
)
# Markers that open a block meant for the model.
STRONG_TAG = _rx(
    r"<\s*/?\s*(?:system|hidden|secret|instructions?|admin|override|sudo|developer|assistant|ai|model|llm|context"
    r"|system[_ -]?(?:prompt|message|note)|ai[_ -]?instructions?|(?:instructions?|note)[_ -]?(?:for|to)[_ -]?"
    r"(?:the[_ -]?)?(?:ai|assistant|model|llm|agent))\b[^>]{0,40}>"
    r"|\[\s*(?:system|hidden|secret|instructions?|admin|override|shadow|sys|sudo|ai|assistant|note to (?:the )?"
    r"(?:ai|assistant|model))\b[^\]\n]{0,30}\]"
)
WEAK_TAG = _rx(
    r"<\s*/?\s*(?:important|critical|note|priority|mandatory|warning|attention|required)\b[^>]{0,40}>"
    r"|\[\s*(?:important|critical|priority|mandatory|attention)\b[^\]\n]{0,30}\]|<!--"
)
# Addressed to the model: second person, modal obligations, sequencing around tool use.
DIRECTIVE = _rx(
    r"\byou (?:must|should|need to|have to|are (?:required|expected|instructed|supposed) to|will need to|shall)\b"
    r"|\b(?:must|should) (?:first|also|always|never|now)\b"
    r"|\b(?:the )?(?:assistant|model|agent|ai|llm)s? "
    r"(?:must|should|needs to|has to|is (?:required|expected) to|shall)\b"
    r"|\b(?:parameter|argument|field|[`'\"][\w-]{1,30}[`'\"])(?: \w+)? (?:must|should|needs to|has to) "
    r"(?:contain|include|hold|carry|be)\b"
    rf"|\b(?:before|after|prior to|when|whenever|once|each time|every time)\b{_C}{{0,80}}?\b(?:this tool|the tool|"
    r"calling|using|invoking|executing|running|any (?:other )?tool|respond|responding|answer|answering|replying|"
    r"you (?:call|use|respond|answer|reply|return))\b"
    r"|\b(?:always|never) (?:call|use|include|send|pass|add|read|ask|tell|mention|run|execute)\b"
    r"|\b(?:it is|it's|this is) (?:very |extremely |absolutely |really )*(?:important|critical|crucial|mandatory|"
    r"required|essential|vital) (?:that|to)\b"
    r"|\bmake sure (?:to|you|that)\b|\b(?:do not|don't|never) (?:forget|fail) to\b"
    r"|\b(?:in|into|to) your (?:response|answer|reply|output|final answer)\b"
    r"|(?:^|[.:;!\n] ?)(?:first|then|also|now),? (?:call|read|run|access|fetch|get|retrieve|check|use|invoke|execute|"
    r"open|list|send|pass|include)\b"
)
# Data the tool has no business with.
SENSITIVE_PATH = _rx(
    r"~/\.ssh\b|/\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\bauthorized_keys\b|\.pem\b|\.p12\b|\.pfx\b|\.keystore\b"
    r"|(?:^|[\s'\"`(=/~])\.env(?:\.[a-z]+)?\b|\.aws/(?:credentials|config)\b|\.azure/|\.config/gcloud\b"
    r"|application_default_credentials|\.kube/config\b|\.docker/config\.json|\.npmrc\b|\.pypirc\b"
    r"|\.netrc\b|\.pgpass\b|\.git-credentials\b|\.(?:bash|zsh)_history\b|/etc/(?:passwd|shadow|sudoers|master\.passwd)\b"
    r"|\.cursor/mcp\.json|\bclaude_desktop_config\.json|\bmcp\.json\b|\bmcp_config\.json\b"
    r"|\b169\.254\.169\.254\b|\bmetadata\.google\.internal\b|\b100\.100\.100\.200\b|\bfd00:ec2::254\b|/latest/meta-data"
    r"|/computemetadata/|\bkeychain\b|\blogin data\b|\bcookies\.sqlite\b|\bwallet\.dat\b"
    r"|\b(?:seed|mnemonic|recovery) phrase\b|\bprivate keys?\b|\bssh keys?\b"
    r"|(?<=[a-z0-9])_(?:api_)?(?:key|token|secret|password)\b (?:environment |env )?var(?:iable)?\b"
)
CONTEXT = _rx(
    # the model's own context: what it was told, what it has seen, what it can call
    r"\byour (?:own |full |complete |entire |current |initial |original |hidden |exact )*"
    r"(?:system prompt|system message|"
    r"system instructions|context window|conversation|chat history|memory|tool ?list|list of tools|tool definitions)\b"
    r"|\byour (?:full |complete |entire |initial |original |hidden |exact |secret )+(?:instructions|prompt)\b"
    r"|\b(?:conversation|chat|message|session) history\b|\bprevious (?:messages|conversation|chats|prompts)\b"
    r"|\b(?:full|entire|whole|complete) (?:conversation|chat|context)\b|\b(?:this|the current) (?:conversation|chat)\b"
    r"|\blast (?:\w+ )?messages\b"
    r"|\bthe user'?s? (?:last|previous|recent|earlier|other|private) "
    r"(?:message|messages|prompt|prompts|request|query)\b"
    r"|\bcontext window\b|\b(?:list of (?:all |the )?(?:available )?tools|tools? list|all (?:other|available) tools)\b"
)
SECRET_WORD = _rx(
    r"\b(?:api[ _-]?keys?|access[ _-]?keys?|secret[ _-]?keys?|passwords?|passphrases?|passwd|credentials?|secrets?"
    r"|(?:auth|access|bearer|refresh|session|api|oauth|personal access) tokens?|tokens?|session cookies?"
    r"|master password|social security numbers?|credit card(?: numbers?)?|card numbers?|cvv|bank account(?: numbers?)?"
    r"|confidential|restricted|environment variables|env vars?|system prompts?)\b"
)
# Moving data out.
EXFIL_PARAM = _rx(
    rf"\b(?:pass|put|place|insert|append|attach|embed|encode|include|add|provide|supply|copy|write|send|set)\b"
    rf"{_C}{{0,60}}?\b(?:as|in|into|inside|within|to|via|through)\b (?:the |a |an |its |your )?[`'\"]?[\w-]{{0,30}}"
    r"[`'\"]? ?(?:parameter|param|argument|arg|field|property|query string|query param(?:eter)?|url|uri|header|"
    r"sidenote|side note|notes?|metadata|comment|memo)\b"
    r"|\b(?:parameter|param|argument|field|property|[`'\"][\w-]{1,30}[`'\"])(?: \w+)? (?:must|should|needs to|has to|"
    r"is to|will) (?:contain|include|hold|carry|be (?:set to|filled with|populated with))\b"
    rf"|\bwith\b{_C}{{0,60}}?\b(?:in|as) (?:the |its |a )?[`'\"]?[\w-]{{0,30}}[`'\"]? ?"
    r"(?:parameter|param|argument|field)\b"
    r"|\b(?:pass|send|provide)\b(?: (?:its|their|the|all|every))? (?:contents?|values?|data|text|output)\b"
    rf"{_C}{{0,20}}?\bas [`'\"]?\w+"
)
EXFIL_OUTPUT = _rx(
    rf"\b(?:include|add|insert|return|output|print|reveal|show|display|list|append|put)\b{_C}{{0,60}}?"
    r"\b(?:in|into|as part of|to|at the (?:start|end|top|beginning) of) (?:your|the) (?:response|answer|reply|output|"
    r"final answer)\b"
    r"|\b(?:prepend|append)\b(?: to)? (?:your|the) (?:response|answer|reply|output)\b"
)
EXFIL_SEND = _rx(
    rf"\b(?:send|sends|forward|forwards|forwarded|upload|post|transmit|exfiltrate|leak|relay|sync|mirror|copy|share|"
    rf"email|mail|bcc|cc|redirect|redirected|route|routed)\b{_C}{{0,80}}?\b(?:to|at|via|using|into)\b{_C}{{0,20}}?"
    r"(?:https?://|www\.|\b[\w.+-]+@[\w-]+\.[a-z]{2,}\b|\+\d[\d -]{7,}\d|\b(?:our|my|this|the following|an? external|"
    r"a remote|the attacker'?s?|attacker|collection) (?:server|endpoint|url|address|webhook|host|number|inbox))"
    r"|\b(?:bcc|cc)\b:? [\w.+-]+@[\w-]+\.[a-z]{2,}\b|\bexfiltrat"
)
EXFIL_URL = _rx(
    r"https?://[^\s)\"'`]*[?&][\w.-]+=(?:\{[^}\n]{0,80}\}|<[^>\n]{0,80}>|\$\{?\w+|\[[^\]\n]{0,80}\])"
    r"|!\[[^\]\n]*\]\(\s*https?://[^)\s]*[?&=][^)\n]{0,120}\)"
)
# Steering other tools.
GENERIC_OTHER = _rx(
    r"\b(?:the |a |an |any |all |every |each )?(?:other|another|existing|trusted|original|legitimate|real|different|"
    r"remaining|also present|also available)(?: \w+)? "
    r"(?:tools?|servers?|functions?|mcp servers?|plugins?|integrations?)\b"
)
NAMED_TOOL = _rx(r"[`'\"]?\b([a-z][a-z0-9]*(?:[_.-][a-z0-9]+)+)\b[`'\"]? (?:tool|function|server|command)\b"
                 r"|\b(?:tool|function) [`'\"]?([a-z][a-z0-9]*(?:[_.-][a-z0-9]+)+)\b")  # fmt: skip
TRIGGER = _rx(
    r"\b(?:when|whenever|if|before|after|each time|every time|once)\b"
    rf"{_C}{{0,50}}?\b(?:is|are|gets|get|has been|was)? ?"
    r"(?:called|used|invoked|run|executed|available|present|requested|loaded|enabled|triggered)\b"
    rf"|\b(?:before|after|prior to)\b (?:execut|call|us|invok|run|perform)\w*{_C}{{0,40}}?\b(?:operation|tool|function|"
    r"command|call|request|action)s?\b"
)
MODAL_ACTION = _rx(
    r"\b(?:must|should|shall|needs? to|has to|have to)\b(?: always| now| also| instead)?"
    rf"{_C}{{0,20}}?\b(?:send|forward|"
    r"redirect|route|use|set|change|include|add|prepend|append|cc|bcc|copy|replace|pass)\b"
)
TAMPER = _rx(
    rf"\b(?:change|replace|modify|alter|override|overwrite|swap|rewrite|redirect|reroute|substitute)\b{_C}{{0,30}}?"
    r"\b(?:recipients?|destination|to address|email address|phone number|account(?: number)?|url|endpoint|"
    r"arguments?|parameters?|params|values?|inputs?|outputs?|results?|response|amount|command)\b"
    r"|\b(?:prepend|append|add)\b{_C}{{0,40}}?\bto (?:every|each|all|any)\b"
)
SHADOW_CLAIM = _rx(
    r"\bthis tool (?:replaces|overrides|supersedes|intercepts|shadows|hooks|wraps|takes precedence over|"
    r"must be used instead of|should be used instead of)\b"
    r"|\b(?:other|all other|the other)(?: \w+)? (?:tools?|functions?|servers?) (?:are|is) (?:buggy|broken|deprecated|"
    r"outdated|unsafe|unreliable|compromised|malicious|wrong|obsolete|not to be trusted)\b"
    r"|\b(?:do not|don't|never) (?:use|call|trust) (?:the |any |all )?(?:other|another|different)(?: \w+)? "
    rf"(?:tools?|servers?)\b(?!{_C}{{0,30}}\b(?:first|before|unless|if|when)\b)"
)
PREFERENCE = _rx(
    r"\b(?:prefer|always use|only use|always call) this (?:tool|one|function)\b|\binstead of (?:any|the) other\b"
)
COMMAND = _rx(
    r"\b(?:curl|wget)\b[^|\n]{0,200}\|\s*(?:ba|z|da)?sh\b|\bbash -i\b|/dev/tcp/|\bnc\b[^\n]{0,40}\s-e\b"
    r"|\bpowershell\b[^\n]{0,40}\s-e(?:nc(?:odedcommand)?)?\b|\brm -rf (?:/|~|\$home)|\bchmod (?:-r )?(?:777|0?666)\b"
    r"|\bbase64 (?:-d|--decode)\b[^\n]{0,40}\|\s*(?:ba)?sh\b|\beval\(atob\("
)
COERCE = _rx(
    rf"\b(?:otherwise|or else|if you don't|if you do not|if you violate)\b{_C}{{0,50}}?\b(?:will not work|won't work|"
    r"fail|crash|break|error|be lost|stop working)\b|\ball (?:the )?data will be lost\b"
    r"|\b(?:very,? ){2,}important\b|\b(?:system|application|app|server) will crash\b"
)
AUTHORITY = _rx(
    r"\b(?:per|according to|required by|mandated by) (?:the )?(?:security|compliance|company|incident response|it|"
    r"admin(?:istrator)?) (?:policy|team|department|rules?)\b|\b(?:message|instruction|notice|order) from (?:the )?"
    r"(?:system|developer|admin(?:istrator)?|security team|anthropic|openai)\b"
)
ACCESS = _rx(
    r"\b(?:read|open|cat|access|load|get|fetch|retrieve|extract|collect|copy|print|output|dump|include|send|pass|upload|"
    r"attach|return|reveal|show|list|look up|grab|take|paste|provide|share|check|query|call|use|write|add|append)\b"
)
PADDING = re.compile(r"[ \t\u00a0]{60,}|(?:[ \t]*\n){12,}")
HTML_COMMENT = re.compile(r"<!--(.*?)(?:-->|$)", re.DOTALL)


# Words a pattern cannot match without (each alternative of the pattern holds one): a substring
# test on the lower-cased text skips the pattern at C speed when none is there.
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "directive": ("you", "must", "should", "need", "have to", "has to", "shall", "before", "after", "prior to",
                  "when", "once", "each time", "every time", "always", "never", "it is", "it's", "this is",
                  "make sure", "forget to", "fail to", "first", "then", "also", "now", "required", "expected"),
    "sensitive-path": ("ssh", "id_", "authorized_keys", ".pem", ".p12", ".pfx", ".keystore", ".env", ".aws/",
                       ".azure/", "gcloud", "application_default", ".kube/", ".docker/", ".npmrc", ".pypirc",
                       ".netrc", ".pgpass", ".git-credentials", "_history", "/etc/", "mcp.json", "mcp_config",
                       "claude_desktop", "169.254", "metadata", "100.100.100.200", "fd00:ec2", "keychain",
                       "login data", "cookies.sqlite", "wallet.dat", "phrase", "private key", "_key", "_token",
                       "_secret", "_password"),
    "conceal": ("not", "n't", "dont", "never", "without", "user", "human", "keep", "remain", "stay", "need",
                "necessary", "skip", "bypass", "avoid", "suppress"),
    "secret-word": ("key", "secret", "pass", "credential", "token", "cookie", "social security", "card", "cvv",
                    "bank account", "confidential", "restricted", "environment variable", "env var",
                    "system prompt"),
    "command": ("curl", "wget", "bash", "/dev/tcp", " -e", "rm -rf", "chmod", "base64", "eval("),
    "context": ("your", "history", "previous", "conversation", "chat", "last", "user", "context", "tool"),
    "override": ("ignore", "disregard", "forget", "override", "bypass", "you are now", "from now on",
                 "instruction", "mode", "act as"),
    "deceive": ("present", "make", "format", "disguise", "hide", "mask", "conceal", "camouflage", "blend",
                "pretend", "as if"),
    "exfil-url": ("http",),
    "chat-token": ("<|", "inst]", "<<", "#"),
    "strong-tag": ("<", "["),
    "weak-tag": ("<", "["),
    "coerce": ("otherwise", "or else", "if you", "very", "data will", "will crash"),
    "authority": ("per ", "according to", "required by", "mandated by", " from "),
}  # fmt: skip
_PREFILTERS = {kind: re.compile("|".join(re.escape(word) for word in words)) for kind, words in _KEYWORDS.items()}


@dataclass(frozen=True, slots=True)
class Signal:
    """One kind of wording found: ``kind`` (``override``, ``conceal``, ``sensitive-path`` ...),
    where in the text (``start``, ``end``) and the words matched (``text``)."""

    kind: str
    start: int
    end: int
    text: str


_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("override", OVERRIDE), ("chat-token", CHAT_TOKEN), ("conceal", CONCEAL), ("deceive", DECEIVE),
    ("strong-tag", STRONG_TAG), ("weak-tag", WEAK_TAG), ("directive", DIRECTIVE), ("sensitive-path", SENSITIVE_PATH),
    ("context", CONTEXT), ("secret-word", SECRET_WORD), ("exfil-param", EXFIL_PARAM), ("exfil-output", EXFIL_OUTPUT),
    ("exfil-send", EXFIL_SEND), ("exfil-url", EXFIL_URL), ("other-tools", GENERIC_OTHER), ("trigger", TRIGGER),
    ("modal-action", MODAL_ACTION), ("tamper", TAMPER), ("shadow-claim", SHADOW_CLAIM), ("preference", PREFERENCE),
    ("command", COMMAND),
    ("coerce", COERCE), ("authority", AUTHORITY), ("padding", PADDING),
)  # fmt: skip


@dataclass(slots=True)
class Signals:
    """The signals of one folded string, by kind."""

    found: dict[str, list[Signal]] = field(default_factory=dict)

    def has(self, *kinds: str) -> bool:
        """Whether any of ``kinds`` was found."""
        found = self.found
        return any(kind in found for kind in kinds)

    def first(self, *kinds: str) -> Signal | None:
        """The earliest signal of ``kinds``, or None."""
        hits = [s for kind in kinds for s in self.found.get(kind, ())]
        return min(hits, key=lambda s: s.start) if hits else None

    def add(self, signal: Signal) -> None:
        self.found.setdefault(signal.kind, []).append(signal)


def signals(folded: str, *, own_name: str = "", others: Collection[str] = ()) -> Signals:
    """The language signals of ``folded`` text (``bastion.scan.unicode.fold``). ``own_name``: the
    definition's name (not a reference to another tool); ``others``: names of the other tools
    known (a mention is ``other-tool``). At most the first match of each kind is kept per 200
    characters, so a long text cannot make the result large."""
    found = Signals()
    lowered = folded.lower()
    for kind, pattern in _PATTERNS:
        prefilter = _PREFILTERS.get(kind)
        if prefilter is not None and prefilter.search(lowered) is None:
            continue
        last = -1_000
        for match in pattern.finditer(folded):
            if match.start() - last < 200:
                continue
            last = match.start()
            found.add(Signal(kind, match.start(), match.end(), match.group()))
            if len(found.found[kind]) >= 8:
                break
    own = own_name.casefold()
    for match in NAMED_TOOL.finditer(folded):
        name = match.group(1) or match.group(2) or ""
        if name and name != own and not own.endswith(name):
            found.add(Signal("named-tool", match.start(), match.end(), name))
            break
    for name, start, end in tool_mentions(folded, own, others):
        found.add(Signal("other-tool", start, end, name))
        break
    return found


def tool_mentions(folded: str, own: str, others: Collection[str]) -> list[tuple[str, int, int]]:
    """Where the names of ``others`` (other than ``own``) appear in ``folded`` as whole words
    (case-insensitive; a name is a token of letters, digits, ``_``, ``.`` and ``-``)."""
    names = others if isinstance(others, frozenset) else frozenset(n.casefold() for n in others)
    if not names:
        return []
    found: list[tuple[str, int, int]] = []
    for match in _TOKEN.finditer(folded):
        token = match.group().casefold()
        if token in names and token != own and len(token) >= 3:
            found.append((match.group(), match.start(), match.end()))
            if len(found) >= 8:
                break
    return found


_TOKEN = re.compile(r"[A-Za-z0-9_][\w.-]*\w|\w")


def same_clause(text: str, a: Signal, b: Signal, *, reach: int = 160) -> bool:
    """Whether two signals are close enough to belong to one instruction: within ``reach``
    characters with no paragraph break between them."""
    lo, hi = sorted((a.start, b.start))
    return hi - lo <= reach and "\n\n" not in text[lo:hi]
