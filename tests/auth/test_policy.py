from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pytest

from secreg.auth.policy import DEFAULT_POLICY, Policy, PolicyError, PolicyStore, _compile, _Glob, _regex, _tokens
from secreg.auth.scope import Access, parse_scopes

EXAMPLE = Path(__file__).resolve().parents[2] / "auth" / "policy.example.yaml"


def rules(text: str) -> Policy:
    return Policy.parse("rules:\n" + text, "policy.yaml")


def allowed(policy: Policy, subject: str, repo: str, action: str, groups: tuple[str, ...] = ()) -> bool:
    return policy.decide(subject, groups, "repository", repo, action).allowed


def test_glob_star_stays_within_a_component_double_star_crosses() -> None:
    p = rules(
        """
  - {account: u1, repository: "team/*", actions: [pull]}
  - {account: u2, repository: "team/**", actions: [pull]}
  - {account: u3, repository: "**", actions: [pull]}
  - {account: u4, repository: "app?", actions: [pull]}
  - {account: u5, repository: "*/base", actions: [pull]}
"""
    )
    assert allowed(p, "u1", "team/app", "pull")
    assert not allowed(p, "u1", "team/a/b", "pull")
    assert not allowed(p, "u1", "team", "pull")
    assert not allowed(p, "u1", "teamx/app", "pull")
    assert allowed(p, "u2", "team/a/b/c", "pull")
    assert allowed(p, "u2", "team/app", "pull")
    assert allowed(p, "u3", "anything/at/all", "pull")
    assert allowed(p, "u4", "app1", "pull") and not allowed(p, "u4", "app12", "pull")
    assert allowed(p, "u5", "x/base", "pull") and not allowed(p, "u5", "x/y/base", "pull")


def test_patterns_with_many_wildcards_match_in_linear_time() -> None:
    """Three or more wildcards go to the position-set matcher: as a regular expression, `*-*-*-*-*/**` against a
    valid 255-character name of dashes took 19 s of CPU to refuse, for any client that asked for that name."""
    p = rules(
        """
  - {account: anonymous, repository: "*-*-*-*-*/**", actions: [pull]}
  - {account: anonymous, repository: "**a**a**a**a**x", actions: [pull]}
"""
    )
    assert isinstance(_compile("*-*-*-*-*/**", ""), _Glob) and isinstance(_compile("team/*-*", ""), re.Pattern)
    assert not allowed(p, "", "a" + "-" * 253 + "a", "pull")  # the 19 s case, now as quick as any other
    assert not allowed(p, "", "a" * 255, "pull")
    assert allowed(p, "", "a-b-c-d-e/f/g", "pull") and not allowed(p, "", "a-b-c-d/f", "pull")
    assert allowed(p, "", "a/a/a/a/x", "pull")


def test_both_matchers_agree() -> None:
    generator = random.Random(20261204)
    pieces = ["a", "b", "-", "/", ".", "*", "**", "?"]
    for _ in range(4000):
        pattern = "".join(generator.choice(pieces) for _ in range(generator.randint(0, 7)))
        name = "".join(generator.choice("ab-/.") for _ in range(generator.randint(0, 9)))
        tokens = _tokens(pattern, "u")
        assert _Glob(tokens).fullmatch(name) == bool(_regex(tokens).fullmatch(name)), (pattern, name)


def test_dot_and_other_characters_are_literal() -> None:
    p = rules('  - {account: u, repository: "a.b/c-d_e", actions: [pull]}\n')
    assert allowed(p, "u", "a.b/c-d_e", "pull")
    assert not allowed(p, "u", "axb/c-d_e", "pull")


def test_user_substitution() -> None:
    p = rules('  - {account: "*", repository: "${user}/**", actions: [pull, push]}\n')
    assert allowed(p, "alice", "alice/app", "push")
    assert allowed(p, "alice", "alice/a/b", "pull")
    assert not allowed(p, "alice", "bob/app", "pull")
    assert not allowed(p, "alice", "alice", "pull")
    assert not allowed(p, "alice", "alice/app", "delete")
    assert not allowed(p, "", "/app", "pull")  # anonymous has no ${user}
    # A user name with regex characters is matched literally.
    assert not allowed(p, "a.b", "axb/app", "pull")
    assert allowed(p, "a.b", "a.b/app", "pull")


def test_accounts_users_groups_anyone_anonymous() -> None:
    p = rules(
        """
  - {account: alice, repository: "a/*", actions: [pull]}
  - {account: "group:ops", repository: "ops/*", actions: [pull]}
  - {account: "@dev", repository: "dev/*", actions: [pull]}
  - {account: "*", repository: "all/*", actions: [pull]}
  - {account: anonymous, repository: "pub/*", actions: [pull]}
  - {account: [bob, carol], repository: "bc/*", actions: [pull]}
"""
    )
    assert allowed(p, "alice", "a/x", "pull") and not allowed(p, "bob", "a/x", "pull")
    assert allowed(p, "bob", "ops/x", "pull", ("ops",)) and not allowed(p, "bob", "ops/x", "pull")
    assert allowed(p, "bob", "dev/x", "pull", ("dev",))
    assert allowed(p, "bob", "all/x", "pull") and not allowed(p, "", "all/x", "pull")
    assert allowed(p, "", "pub/x", "pull") and allowed(p, "bob", "pub/x", "pull")  # anonymous: everyone
    assert allowed(p, "carol", "bc/x", "pull") and not allowed(p, "alice", "bc/x", "pull")
    assert not allowed(p, "", "ops/x", "pull", ("ops",))  # groups never apply to anonymous


def test_star_action_means_all_three() -> None:
    p = rules('  - {account: root, repository: "**", actions: ["*"]}\n')
    for action in ("pull", "push", "delete", "*"):
        assert allowed(p, "root", "x/y", action)


def test_actions_as_comma_string() -> None:
    p = rules('  - {account: u, repository: "x", actions: "pull, push"}\n')
    assert allowed(p, "u", "x", "push") and not allowed(p, "u", "x", "delete")


def test_granted_downscopes_and_drops_empty() -> None:
    p = Policy.parse(DEFAULT_POLICY)
    requested = parse_scopes(
        [
            "repository:alice/app:pull,push,delete",
            "repository:bob/app:pull",
            "registry:catalog:*",
            "repository(plugin):alice/x:pull",
            "weird:thing:pull",
        ]
    )
    assert p.granted("alice", [], requested) == [
        Access.repository("alice/app", "pull", "push"),
        Access("registry", "catalog", frozenset({"*"})),
        Access("repository(plugin)", "alice/x", frozenset({"pull"})),
    ]
    assert p.granted("admin", ["admins"], requested) == [
        Access.repository("alice/app", "pull", "push", "delete"),
        Access.repository("bob/app", "pull"),
        Access("registry", "catalog", frozenset({"*"})),
        Access("repository(plugin)", "alice/x", frozenset({"pull"})),
    ]
    assert p.granted("", [], requested) == []


def test_default_policy() -> None:
    p = Policy.parse(DEFAULT_POLICY)
    assert allowed(p, "admin", "anyone/anything", "delete", ("admins",))
    assert p.decide("admin", ["admins"], "registry", "catalog", "*").allowed
    # Every logged-in user may list the catalog; the registry filters it to what they may pull.
    assert p.decide("alice", [], "registry", "catalog", "*").allowed
    assert not p.decide("", [], "registry", "catalog", "*").allowed
    assert allowed(p, "alice", "alice/app", "push")
    assert not allowed(p, "alice", "bob/app", "pull")
    assert not allowed(p, "", "alice/app", "pull")


def test_union_of_rules_and_explain_names_the_first_granting_rule() -> None:
    p = rules(
        """
  - account: "*"
    repository: "team/**"
    actions: [pull]
  - account: group:ci
    repository: "team/**"
    actions: [pull, push]
"""
    )
    assert p.explain("bot", "team/app", "push", ["ci"]) == (
        "allow: rule 2 (line 6): account group:ci; repository team/**; actions pull,push"
    )
    assert p.explain("bot", "team/app", "pull", ["ci"]).startswith("allow: rule 1 (line 3)")
    assert p.explain("alice", "team/app", "push") == "deny: no rule grants it"
    assert p.explain("alice", "_catalog", "*") == "deny: no rule grants it"


def test_catalog_only_rule() -> None:
    p = rules("  - {account: monitor, catalog: true}\n")
    assert p.decide("monitor", [], "registry", "catalog", "*").allowed
    assert p.explain("monitor", "_catalog", "pull").startswith("allow: rule 1")
    assert not allowed(p, "monitor", "x", "pull")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty policy"),
        ("rules: [", "not valid YAML"),
        ("- a\n- b\n", "mapping with a 'rules:' list"),
        ("rules: 3\n", "'rules' must be a list"),
        ("rulez: []\n", "unknown top-level key 'rulez'"),
        ("rules:\n  - 3\n", "line 2: rules[0]: expected a mapping"),
        ("rules:\n  - repository: x\n    actions: [pull]\n", "line 2: rules[0].account: required"),
        ("rules:\n  - account: x\n    repo: y\n", "line 3: rules[0].repo: unknown key 'repo'"),
        (
            "rules:\n  - account: x\n    repository: a\n    actions: [pul]\n",
            "line 4: rules[0].actions: unknown action 'pul'",
        ),
        ("rules:\n  - account: x\n    repository: a\n", "line 2: rules[0].actions: required"),
        ("rules:\n  - account: x\n    actions: [pull]\n", "line 2: rules[0].repository: expected a glob"),
        ("rules:\n  - account: x\n", "line 2: rules[0]: a rule needs repository and actions"),
        ("rules:\n  - account: Bad Name\n    catalog: true\n", "line 2: rules[0].account: invalid account"),
        ("rules:\n  - account: x\n    catalog: maybe\n", "line 3: rules[0].catalog: expected true or false"),
        (
            'rules:\n  - account: x\n    repository: "${group}/*"\n    actions: [pull]\n',
            "line 3: rules[0].repository: invalid pattern",
        ),
        ('rules:\n  - account: x\n    repository: "A/*"\n    actions: [pull]\n', "invalid pattern 'A/*'"),
    ],
)
def test_invalid_policies_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.parse(text, "policy.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("policy.yaml")


def test_example_file_is_valid_and_means_what_it_says() -> None:
    p = Policy.parse(EXAMPLE.read_text(), str(EXAMPLE))
    assert allowed(p, "", "public/base", "pull") and not allowed(p, "", "public/a/b", "pull")
    assert allowed(p, "bot", "team/app", "push", ("ci",))
    assert allowed(p, "alice", "team/app", "pull") and not allowed(p, "alice", "team/app", "push")
    assert allowed(p, "alice", "team/app", "delete")
    assert p.decide("monitor", [], "registry", "catalog", "*").allowed


def test_store_reloads_and_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('rules:\n  - {account: alice, repository: "a/*", actions: [pull]}\n')
    store = PolicyStore(path, check_interval=0)
    assert allowed(store.current, "alice", "a/x", "pull")
    path.write_text('rules:\n  - {account: bob, repository: "a/*", actions: [pull]}\n')
    assert allowed(store.current, "bob", "a/x", "pull")
    path.write_text("rules:\n  - {account: bob, repository: 'a/*', actions: [pulll]}\n")
    with caplog.at_level(logging.ERROR, "secreg.auth"):
        assert allowed(store.current, "bob", "a/x", "pull")
    assert "line 2: rules[0].actions: unknown action 'pulll'" in caplog.text
    assert "keeping the previous version" in caplog.text
    caplog.clear()
    path.unlink()
    with caplog.at_level(logging.ERROR, "secreg.auth"):
        assert allowed(store.current, "bob", "a/x", "pull")
    assert "missing" in caplog.text


def test_store_refuses_to_start_with_a_bad_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="missing"):
        PolicyStore(tmp_path / "policy.yaml")
    (tmp_path / "policy.yaml").write_text("rules: 1\n")
    with pytest.raises(PolicyError, match="must be a list"):
        PolicyStore(tmp_path / "policy.yaml")
