"""The access policy: which account may pull, push or delete which repositories (`auth/policy.yaml`).

    rules:
      - account: group:admins        # a user, group:NAME (or @NAME), "*" (any logged-in user), anonymous
        repository: "**"             # glob: "*" stays within one path component, "**" crosses "/"
        actions: ["*"]               # pull, push, delete, or "*" for all three
        catalog: true                # may also list the catalog (GET /v2/_catalog) and search it
                                     # (`docker search`, scope registry:catalog:search)
      - account: "*"
        repository: "${user}/**"     # ${user} is the name of the account asking
        actions: [pull, push]

Rules only grant; what an account may do is the union of every rule that matches it, and anything no
rule grants is denied. `anonymous` rules apply to every client, logged in or not. `Policy` is a pure
value (parse, then ask); `PolicyStore` re-reads the file when it changes and keeps the last good
version when the new one is invalid.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from secreg import workers
from secreg.auth.scope import DELETE, PULL, PUSH, Access
from secreg.auth.watched import WatchedFile
from secreg.observability import audit

__all__ = [
    "ACTIONS",
    "DEFAULT_POLICY",
    "Decision",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "Rule",
]

ACTIONS = (PULL, PUSH, DELETE)
ANONYMOUS = "anonymous"
ANY_USER = "*"
CATALOG = Access("registry", "catalog", frozenset({"*"}))
# What `catalog: true` grants on registry:catalog: listing (`*`) and `docker search` (`search`). Both show
# only the repositories the account may pull.
CATALOG_ACTIONS = frozenset({"*", "search"})

_KEYS = ("account", "repository", "actions", "catalog")
_ACCOUNT = re.compile(
    r"^(?:\*|anonymous|(?:group:|@)[A-Za-z0-9][A-Za-z0-9._-]{0,63}|[a-z0-9][a-z0-9._-]{0,63})\Z"
)
_PATTERN_CHARS = re.compile(r"^(?:[a-z0-9._/*?-]|\$\{user\})+\Z")

DEFAULT_POLICY = """\
# secreg access policy. Rules only grant: an account may do what any matching rule allows, nothing else.
#   account:    a user name, group:NAME (groups live in the groups file next to this one),
#               "*" (any logged-in user) or anonymous (every client, logged in or not)
#   repository: a glob; "*" matches within one path component, "**" across "/"; ${user} is the
#               name of the account asking
#   actions:    any of pull, push, delete, or "*" for all three
#   catalog:    true lets the account list repositories (GET /v2/_catalog) and search them
#               (docker search); both show only the repositories that account may pull
# Check a decision with:  secreg policy check USER REPOSITORY ACTION
rules:
  # Administrators may do everything, including listing the catalog.
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  # Every logged-in user may pull and push the repositories under their own name, and list
  # (in the catalog) the repositories they may pull.
  - account: "*"
    repository: "${user}/**"
    actions: [pull, push]
    catalog: true
  # Nothing for anonymous clients. To publish repositories for everybody to pull:
  # - account: anonymous
  #   repository: "public/**"
  #   actions: [pull]
"""


class PolicyError(ValueError):
    """The policy file is missing, not YAML, or breaks the rule grammar (the message names line and key)."""


# A regular expression backtracks through every way its wildcards can split a name that fails to match: with three
# or more (`*-*-*-*-*/**` against `a---...---a`, 255 characters) one decision took 19 s of CPU, for any client
# naming such a repository. Those patterns are matched by `_Glob`, in time linear in the name.
_REGEX_WILDCARDS = 2


def _tokens(pattern: str, user: str) -> list[str]:
    """`pattern` as glob tokens: "**", "*", "?" or one literal character (`${user}` spelled out)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("${user}", i):
            out.extend(user)
            i += len("${user}")
        elif pattern.startswith("**", i):
            out.append("**")
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return out


class _Glob:
    """The glob as a set of positions advanced one character at a time (Thompson's construction): work bounded
    by len(name) x len(pattern), whatever the pattern."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = tokens

    def _closure(self, states: set[int]) -> set[int]:
        out: set[int] = set()
        stack = list(states)
        while stack:
            i = stack.pop()
            if i not in out:
                out.add(i)
                if i < len(self._tokens) and self._tokens[i] in ("*", "**"):
                    stack.append(i + 1)  # a wildcard may match nothing
        return out

    def fullmatch(self, text: str) -> bool:
        tokens = self._tokens
        states = self._closure({0})
        for char in text:
            advanced: set[int] = set()
            for i in states:
                if i == len(tokens):
                    continue
                token = tokens[i]
                if token == "**" or (token == "*" and char != "/"):
                    advanced.add(i)
                elif (token == "?" and char != "/") or token == char:
                    advanced.add(i + 1)
            if not advanced:
                return False
            states = self._closure(advanced)
        return len(tokens) in states


def _regex(tokens: list[str]) -> re.Pattern[str]:
    wildcards = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(t) or re.escape(t) for t in tokens))


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, user: str) -> re.Pattern[str] | _Glob:
    tokens = _tokens(pattern, user)
    if sum(t in ("**", "*") for t in tokens) > _REGEX_WILDCARDS:
        return _Glob(tokens)
    return _regex(tokens)


@dataclass(frozen=True)
class Rule:
    number: int  # 1-based position in the rules list
    line: int  # line in the policy file, 0 if unknown
    accounts: tuple[str, ...]
    repository: str | None
    actions: frozenset[str]  # "*" expanded: pull, push, delete and "*" itself
    catalog: bool

    def applies_to(self, subject: str, groups: frozenset[str]) -> bool:
        for account in self.accounts:
            if account == ANONYMOUS:
                return True
            if not subject:
                continue
            if account == ANY_USER or account == subject:
                return True
            if account.startswith("group:") and account[6:] in groups:
                return True
            if account.startswith("@") and account[1:] in groups:
                return True
        return False

    def covers(self, subject: str, repository: str) -> bool:
        if self.repository is None:
            return False
        if "${user}" in self.repository and not subject:
            return False
        return bool(_compile(self.repository, subject).fullmatch(repository))

    def describe(self) -> str:
        parts = [f"account {', '.join(self.accounts)}"]
        if self.repository is not None:
            shown = sorted(a for a in self.actions if a != "*")
            parts.append(f"repository {self.repository}")
            parts.append("actions " + ("*" if "*" in self.actions else ",".join(shown)))
        if self.catalog:
            parts.append("catalog")
        where = f" (line {self.line})" if self.line else ""
        return f"rule {self.number}{where}: " + "; ".join(parts)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: Rule | None  # the first rule that grants; None when denied

    def __str__(self) -> str:
        if self.rule is None:
            return "deny: no rule grants it"
        return f"allow: {self.rule.describe()}"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    source: str = "policy"

    @classmethod
    def parse(cls, text: str, source: str = "policy") -> Policy:
        """Parse and validate policy YAML; PolicyError names the line and key of the first problem."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{source}: not valid YAML: {exc}") from None
        if data is None:
            raise PolicyError(f"{source}: empty policy (expected a 'rules:' list)")
        if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
            raise PolicyError(f"{source}: expected a mapping with a 'rules:' list at the top level")
        unknown = sorted(str(k) for k in data if k != "rules")
        if unknown:
            raise PolicyError(f"{source}: unknown top-level key {unknown[0]!r} (expected 'rules')")
        rules_data = data.get("rules")
        if not isinstance(rules_data, list):
            raise PolicyError(f"{source}: 'rules' must be a list of rules")
        rules_node = next((v for k, v in root.value if k.value == "rules"), None)
        nodes = list(rules_node.value) if isinstance(rules_node, yaml.SequenceNode) else []
        rules = tuple(
            _parse_rule(item, i + 1, nodes[i] if i < len(nodes) else None, source)
            for i, item in enumerate(rules_data)
        )
        return cls(rules, source)

    def decide(
        self, subject: str, groups: Iterable[str], access_type: str, name: str, action: str
    ) -> Decision:
        """Whether `subject` (in `groups`; "" = anonymous) may do `action` on one resource, and why."""
        groups = frozenset(groups)
        base_type = access_type.split("(", 1)[0]
        for rule in self.rules:
            if not rule.applies_to(subject, groups):
                continue
            if base_type == "repository" and action in rule.actions and rule.covers(subject, name):
                return Decision(True, rule)
            if rule.catalog and access_type == "registry" and name == "catalog" and action in CATALOG_ACTIONS:
                return Decision(True, rule)
        return Decision(False, None)

    def granted(self, subject: str, groups: Iterable[str], requested: Sequence[Access]) -> list[Access]:
        """The part of `requested` the policy allows (downscoping, never an error); empty grants dropped.
        `*` on a repository asks for every action: granted as the ones the policy allows (and `*` itself only
        when it allows them all)."""
        groups = frozenset(groups)
        result: list[Access] = []
        for access in requested:
            actions = access.actions
            if access.base_type == "repository" and "*" in actions:
                actions = actions | frozenset(ACTIONS)
            allowed = frozenset(
                a for a in actions if self.decide(subject, groups, access.type, access.name, a).allowed
            )
            if allowed:
                result.append(Access(access.type, access.name, allowed))
        return result

    def explain(self, user: str, repository: str, action: str, groups: Iterable[str] = ()) -> str:
        """One line for `secreg policy check`: allow/deny and the deciding rule. `repository` may be
        `_catalog` to ask about listing the catalog."""
        if repository == "_catalog":
            decision = self.decide(user, groups, "registry", "catalog", "*")
        else:
            decision = self.decide(user, groups, "repository", repository, action)
        return str(decision)


def _parse_rule(item: Any, number: int, node: yaml.Node | None, source: str) -> Rule:
    line = node.start_mark.line + 1 if node is not None else 0
    key_lines = {
        k.value: k.start_mark.line + 1 for k, _ in (node.value if isinstance(node, yaml.MappingNode) else [])
    }

    def where(key: str | None = None) -> str:
        at = key_lines.get(key, line) if key else line
        name = f"rules[{number - 1}]" + (f".{key}" if key else "")
        return f"{source} line {at}: {name}" if at else f"{source}: {name}"

    if not isinstance(item, dict):
        raise PolicyError(f"{where()}: expected a mapping with account, repository, actions")
    for key in item:
        if key not in _KEYS:
            raise PolicyError(f"{where(key)}: unknown key {key!r} (expected one of {', '.join(_KEYS)})")
    raw_accounts = item.get("account")
    if isinstance(raw_accounts, str):
        raw_accounts = [raw_accounts]
    if not isinstance(raw_accounts, list) or not raw_accounts:
        raise PolicyError(f"{where('account')}: required: a user, group:NAME, '*' or anonymous (or a list)")
    accounts = []
    for account in raw_accounts:
        if not isinstance(account, str) or not _ACCOUNT.match(account):
            raise PolicyError(
                f"{where('account')}: invalid account {account!r} (expected a user name, group:NAME, @NAME, "
                "'*' or anonymous)"
            )
        accounts.append(account)

    catalog = item.get("catalog", False)
    if not isinstance(catalog, bool):
        raise PolicyError(f"{where('catalog')}: expected true or false, got {catalog!r}")

    repository = item.get("repository")
    raw_actions = item.get("actions")
    if repository is None and raw_actions is None:
        if not catalog:
            raise PolicyError(f"{where()}: a rule needs repository and actions (or catalog: true)")
        return Rule(number, line, tuple(accounts), None, frozenset(), catalog)
    if not isinstance(repository, str) or not repository:
        raise PolicyError(f"{where('repository')}: expected a glob such as 'team/*' or '${{user}}/**'")
    if not _PATTERN_CHARS.match(repository.replace("${user}", "")) and repository != "${user}":
        raise PolicyError(
            f"{where('repository')}: invalid pattern {repository!r} (lower-case letters, digits, . _ - /, "
            "the wildcards * ** ?, and ${user})"
        )
    if isinstance(raw_actions, str):
        raw_actions = [a.strip() for a in raw_actions.split(",")]
    if not isinstance(raw_actions, list) or not raw_actions:
        raise PolicyError(f"{where('actions')}: required: a list of pull, push, delete or '*'")
    actions: set[str] = set()
    for action in raw_actions:
        if action == "*":
            actions.update(ACTIONS + ("*",))
        elif action in ACTIONS:
            actions.add(action)
        else:
            raise PolicyError(
                f"{where('actions')}: unknown action {action!r} (expected pull, push, delete or '*')"
            )
    return Rule(number, line, tuple(accounts), repository, frozenset(actions), catalog)


class PolicyStore:
    """The policy in a file, re-read when the file changes (see `WatchedFile`).

    The first load raises PolicyError; a later invalid or missing file is logged and the last good
    policy stays in force.
    """

    def __init__(self, path: Path, *, check_interval: float = 0.0) -> None:
        self.path = Path(path)
        self._file = WatchedFile(self.path, self._parse, check_interval)

    def _parse(self, data: bytes | None) -> Policy:
        if data is None:
            raise PolicyError(f"{self.path}: missing (run `secreg serve` once to write the default policy)")
        try:
            text = data.decode("utf-8")
            policy = Policy.parse(text, str(self.path))
        except UnicodeDecodeError:
            audit.event("policy.invalid", path=str(self.path), error="not UTF-8 text")
            raise PolicyError(f"{self.path}: not UTF-8 text") from None
        except PolicyError as exc:
            audit.event("policy.invalid", path=str(self.path), error=str(exc)[:500])
            raise
        if not workers.spawned():  # one line per server, not one per worker
            audit.event("policy.loaded", path=str(self.path), rules=len(policy.rules))
        return policy

    @property
    def current(self) -> Policy:
        return self._file.get()
