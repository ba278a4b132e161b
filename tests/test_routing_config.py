"""Routing rules' configuration (docs/routing.md): `[[tasks.routes]]` in resonate.toml, the
environment's JSON or `pattern=target` forms, the repeatable `--tasks-route` flag, precedence,
startup validation naming the rule, `resonate serve` refusing to start, and the pattern
matcher against a reference implementation."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import ConfigError, load
from shared.config_routes import Route, compile_routes, first_target, matches
from tests.test_config import run_cli

A = Route("analytics/*", "poll://any@analytics")
B = Route("reports/*", "poll://any@reports")


# ---------------------------------------------------------------------------------- every layer

def test_default_is_no_rules() -> None:
    assert load({}, env={}).tasks.routes == ()


def test_toml_array_of_tables_in_order(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text('''
[tasks]
retry_timeout = 500

[[tasks.routes]]
pattern = "analytics/*"
target = "poll://any@analytics"

[[tasks.routes]]
pattern = "reports/*"
target = "poll://any@reports"
''')
    cfg = load({}, env={}, cwd=tmp_path)
    assert cfg.tasks.routes == (A, B) and cfg.tasks.retry_timeout == 500


def test_toml_inline_tables_and_strings(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text(
        '[tasks]\nroutes = [{pattern = "analytics/*", target = "poll://any@analytics"}, '
        '"reports/*=poll://any@reports"]\n')
    assert load({}, env={}, cwd=tmp_path).tasks.routes == (A, B)


@pytest.mark.parametrize("value", [
    json.dumps([{"pattern": "analytics/*", "target": "poll://any@analytics"},
                {"pattern": "reports/*", "target": "poll://any@reports"}]),
    json.dumps(["analytics/*=poll://any@analytics", "reports/*=poll://any@reports"]),
    "analytics/*=poll://any@analytics, reports/*=poll://any@reports",
], ids=["json-objects", "json-strings", "comma-separated"])
def test_environment_forms(value: str) -> None:
    assert load({}, env={"RESONATE_TASKS__ROUTES": value}).tasks.routes == (A, B)


def test_string_form_splits_at_the_first_equals_sign() -> None:
    cfg = load({"tasks.routes": ("hooks/*=https://example.com/run?a=1&b=2",)}, env={})
    assert cfg.tasks.routes == (Route("hooks/*", "https://example.com/run?a=1&b=2"),)


def test_yaml_in_the_modern_spelling(tmp_path: Path) -> None:
    (tmp_path / "resonate.yml").write_text(
        "tasks:\n  routes:\n    - pattern: analytics/*\n      target: poll://any@analytics\n")
    assert load({}, env={}, file=tmp_path / "resonate.yml").tasks.routes == (A,)


def test_the_first_tasks_api_connections_are_not_mapped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The older server's first Tasks API design (connections with id patterns, never used by an
    SDK; docs/routing.md): warned about, pointing at tasks.routes, and nothing is routed."""
    (tmp_path / "resonate.yml").write_text(
        "aio:\n  subsystems:\n    queuing:\n      config:\n        connections:\n"
        "          - name: analytics\n            kind: http\n            pattern: /analytics/*\n"
        "            metadata: {properties: {url: 'http://localhost:5001'}}\n")
    with caplog.at_level(logging.WARNING, logger="resonate.config"):
        cfg = load({}, env={}, file=tmp_path / "resonate.yml")
    assert cfg.tasks.routes == ()
    assert re.search(r"legacy key aio\.subsystems\.queuing\.config\.connections has no equivalent in this "
                     r"server \(the first Tasks API design's connections; see tasks\.routes", caplog.text)


def test_precedence_flag_over_environment_over_file(tmp_path: Path) -> None:
    """One key, replaced whole by the layer above (the lists are not merged)."""
    (tmp_path / "resonate.toml").write_text('[[tasks.routes]]\npattern = "file/*"\ntarget = "poll://any@file"\n')
    env = {"RESONATE_TASKS__ROUTES": '["env/*=poll://any@env", "env2/*=poll://any@env2"]'}
    assert load({}, env={}, cwd=tmp_path).tasks.routes == (Route("file/*", "poll://any@file"),)
    assert load({}, env=env, cwd=tmp_path).tasks.routes == (Route("env/*", "poll://any@env"),
                                                           Route("env2/*", "poll://any@env2"))
    flags = {"tasks.routes": ("flag/*=poll://any@flag",)}
    assert load(flags, env=env, cwd=tmp_path).tasks.routes == (Route("flag/*", "poll://any@flag"),)


@pytest.mark.process  # runs the CLI in a subprocess
def test_repeatable_flag_replaces_the_list(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text('[[tasks.routes]]\npattern = "file/*"\ntarget = "poll://any@file"\n')
    r = run_cli("serve", "--tasks-route", "analytics/*=poll://any@analytics", "--tasks-route",
                "reports/*=poll://any@reports", cwd=tmp_path, dump=True,
                env={"RESONATE_TASKS__ROUTES": "env/*=poll://any@env"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tasks"]["routes"] == [
        {"pattern": "analytics/*", "target": "poll://any@analytics"},
        {"pattern": "reports/*", "target": "poll://any@reports"}]
    cleared = run_cli("serve", "--tasks-route", "", cwd=tmp_path, dump=True)  # an empty value: no rules
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["tasks"]["routes"] == []
    usage = run_cli("serve", "--help", cwd=tmp_path).stdout
    assert "--tasks-route PATTERN=TARGET" in usage


# ------------------------------------------------------------------------------- invalid rules

RULE2 = "tasks.routes: rule 2 (pattern {p!r}, target {t!r}): "


@pytest.mark.parametrize(("pattern", "target", "extra", "why"), [
    ("", "poll://any@a", {}, "the pattern is empty"),
    ("  ", "poll://any@a", {}, "the pattern is empty"),
    ("a/\x07*", "poll://any@a", {}, "the pattern contains a control character"),
    ("x" * 1025 + "*", "poll://any@a", {}, "the pattern can match no promise id"),
    ("a/*", "analytics", {}, "the target is not a valid address"),
    ("a/*", "poll://all@a", {}, "the target is not a valid address"),
    ("a/*", "poll://any@a\n", {}, "the target is not a valid address"),
    ("a/*", "ftp://example.com", {}, "the target is not a valid address"),
    ("a/*", "poll://any@" + "g" * 1100, {}, "the target is longer than 1024 bytes"),
    ("a/*", "poll://any@" + "g" * 250, {"storage.type": "mysql", "storage.mysql.url": "mysql://u@h/d"},
     "the target is longer than 255 characters"),
    ("a/*", "bash://report", {}, "its transport is disabled (transports.bash_exec.enabled is false)"),
    ("a/*", "gcps://proj/topic", {}, "its transport is disabled (transports.gcps.enabled is false)"),
    ("a/*", "poll://any@a", {"transports.http_poll.enabled": False},
     "its transport is disabled (transports.http_poll.enabled is false)"),
    ("a/*", "https://10.1.2.3/run", {"transports.http_push.deny_private": True},
     "the outbound destination policy refuses it: host '10.1.2.3' has address 10.1.2.3"),
    ("a/*", "http://blocked.example/run", {"transports.http_push.deny": ("blocked.example",)},
     "the outbound destination policy refuses it: host 'blocked.example'"),
    ("a/*", "gcps://proj/topic", {"transports.gcps.enabled": True, "transports.gcps.allow_projects": ("other",)},
     "the outbound destination policy refuses it: project 'proj' is not on transports.gcps.allow_projects"),
])
def test_invalid_rule_names_index_pattern_target_and_layer(pattern: str, target: str, extra: dict, why: str) -> None:
    rules = (Route("ok/*", "https://203.0.113.9/ok"), Route(pattern, target))  # rule 1 passes every check
    with pytest.raises(ConfigError) as e:
        load({"tasks.routes": rules, **extra}, env={}, sources={"tasks.routes": "--tasks-route (flag)"})
    msg = str(e.value)
    assert msg.startswith(RULE2.format(p=pattern, t=target) + why), msg
    assert msg.endswith("(tasks.routes from --tasks-route (flag))"), msg


def test_allowed_destinations_pass() -> None:
    cfg = load({"tasks.routes": (Route("a/*", "https://203.0.113.9/run"), Route("b/*", "gcps://proj/topic")),
                "transports.http_push.deny_private": True, "transports.gcps.enabled": True,
                "transports.gcps.allow_projects": ("proj",)}, env={})
    assert [r.target for r in cfg.tasks.routes] == ["https://203.0.113.9/run", "gcps://proj/topic"]


@pytest.mark.parametrize(("env", "msg"), [
    ('["a/*=poll://any@a", "b/*"]', "rule 2, 'b/*', is not 'pattern=target'"),
    ('[{"pattern": "a/*"}]', "rule 1, {'pattern': 'a/*'}, needs a string target"),
    ('[{"pattern": "a/*", "target": "poll://any@a", "group": "x"}]', "has unknown field(s) group"),
    ('[{"pattern": 1, "target": "poll://any@a"}]', "needs a string pattern"),
    ("[7]", "rule 1, 7, is not a table {pattern, target} or a string 'pattern=target'"),
    ('[{"pattern": "a/*",', "is not a JSON array of rules"),
    ('{"pattern": "a/*", "target": "poll://any@a"}', "is not 'pattern=target'"),
])
def test_malformed_entries_name_the_variable(env: str, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        load({}, env={"RESONATE_TASKS__ROUTES": env})
    assert str(e.value).startswith("invalid value for tasks.routes from RESONATE_TASKS__ROUTES (environment): ")
    assert msg in str(e.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "resonate.toml").write_text(
        '[[tasks.routes]]\npattern = "a/*"\ntarget = "poll://any@a"\n\n'
        '[[tasks.routes]]\npattern = "b/*"\ntarget = "nowhere"\n')
    with pytest.raises(ConfigError, match=re.escape(
            "tasks.routes: rule 2 (pattern 'b/*', target 'nowhere'): the target is not a valid address")) as e:
        load({}, env={}, cwd=tmp_path)
    assert str(e.value).endswith("(tasks.routes from resonate.toml, line 1 (file))")
    (tmp_path / "resonate.toml").write_text('[[tasks.routes]]\npattern = "a/*"\n')
    with pytest.raises(ConfigError, match=re.escape("invalid value for tasks.routes from resonate.toml, line 1 "
                                                    "(file): rule 1, {'pattern': 'a/*'}, needs a string target")):
        load({}, env={}, cwd=tmp_path)


@pytest.mark.process  # runs `python -m local serve`
@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_serve_refuses_to_start_naming_the_rule(tmp_path: Path, how: str) -> None:
    """An invalid rule stops `resonate serve` before it opens storage or a port: exit 1 and the
    rule on stderr (a server that silently dropped a rule would strand its promises)."""
    rules = ["analytics/*=poll://any@analytics", "reports/*=bash://report"]
    args: list[str] = ["serve", "--storage-type", "memory", "--server-port", "0"]
    env: dict[str, str] = {}
    if how == "flag":
        args += [a for r in rules for a in ("--tasks-route", r)]
    elif how == "env":
        env["RESONATE_TASKS__ROUTES"] = json.dumps(rules)
    else:
        (tmp_path / "resonate.toml").write_text("".join(
            f'[[tasks.routes]]\npattern = "{r.split("=")[0]}"\ntarget = "{r.split("=", 1)[1]}"\n' for r in rules))
    r = run_cli(*args, cwd=tmp_path, env=env)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert ("Fatal: Configuration error: tasks.routes: rule 2 (pattern 'reports/*', target 'bash://report'): "
            "its transport is disabled (transports.bash_exec.enabled is false)") in r.stderr
    assert not (tmp_path / "resonate.db").exists()


@pytest.mark.process  # runs `python -m local serve`
def test_serve_refuses_a_malformed_flag(tmp_path: Path) -> None:
    r = run_cli("serve", "--storage-type", "memory", "--tasks-route", "analytics/*", cwd=tmp_path)
    assert r.returncode == 1
    assert ("Fatal: Configuration error: invalid value for tasks.routes from --tasks-route (flag): "
            "rule 1, 'analytics/*', is not 'pattern=target'") in r.stderr


# ------------------------------------------------------------------------------------- matching

@pytest.mark.parametrize(("pattern", "id", "hit"), [
    ("analytics/*", "analytics/2025/01/report", True),  # `*` crosses `/`
    ("analytics/*", "analytics/", True),  # the empty run
    ("analytics/*", "analytics", False),
    ("analytics/*", "x/analytics/1", False),  # anchored at the start
    ("*/daily", "eu/analytics/daily", True),
    ("*/daily", "eu/daily/x", False),  # anchored at the end
    ("a*b*c", "abc", True),
    ("a*b*c", "aXbYbZc", True),
    ("a*b*c", "acb", False),
    ("ab*ba", "aba", False),  # head and tail may not overlap
    ("a**", "a", True),
    ("*", "", True),
    ("exact", "exact", True),
    ("exact", "exactly", False),
    ("a.c/?/[x]", "a.c/?/[x]", True),  # no other wildcard: `.`, `?`, `[` are themselves
    ("a.c/*", "abc/1", False),
])
def test_matches(pattern: str, id: str, hit: bool) -> None:
    assert matches(tuple(pattern.split("*")), id) is hit


def reference(pattern: str, id: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), id, re.DOTALL) is not None


@given(st.text("ab/*", max_size=8), st.text("ab/", max_size=12))
def test_matches_agrees_with_a_regular_expression(pattern: str, id: str) -> None:
    assert matches(tuple(pattern.split("*")), id) is reference(pattern, id)


def test_first_match_wins() -> None:
    routes = compile_routes([Route("analytics/eu/*", "poll://any@eu"), Route("analytics/*", "poll://any@all")])
    assert first_target(routes, "analytics/eu/1") == "poll://any@eu"
    assert first_target(routes, "analytics/us/1") == "poll://any@all"
    assert first_target(routes, "reports/1") is None
    assert first_target(compile_routes(reversed([Route("analytics/eu/*", "poll://any@eu"),
                                                 Route("analytics/*", "poll://any@all")])),
                        "analytics/eu/1") == "poll://any@all"


def test_many_wildcards_against_a_long_id() -> None:
    """A pattern with many `*` and an id of the largest size: linear matching, no backtracking
    blow-up (a regular expression `a.*a.*…b` would take astronomically long on this id)."""
    parts = tuple(("a*" * 30 + "b").split("*"))
    assert matches(parts, "a" * 1024) is False
    assert matches(parts, "a" * 1023 + "b") is True
