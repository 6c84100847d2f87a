"""The stand-in's env-file reader (hack/testbedlib/standin.py): shell-quoted assignments in, exact values out."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testbedlib.standin import UsageError, parse_env_file

# Any text a Kubernetes env value can hold (no NUL: environment strings cannot carry it).
env_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@given(st.dictionaries(env_names, env_values, max_size=8))
def test_values_written_with_shlex_quote_read_back_exactly(values: dict[str, str]) -> None:
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    assert parse_env_file(text) == values


@given(st.dictionaries(env_names, env_values, max_size=5))
def test_export_prefix_comments_and_blank_lines_are_allowed(values: dict[str, str]) -> None:
    text = "# generated\n\n" + "".join(
        f"export {k}={shlex.quote(v)}  # trailing comment\n\n" for k, v in values.items()
    )
    assert parse_env_file(text) == values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A='it'\"'\"'s'", {"A": "it's"}),  # Go shellescape.Quote / shlex.quote style
        ('A="x \\$HOME \\` \\" \\\\ y"', {"A": 'x $HOME ` " \\ y'}),
        ('A="keep \\n and \\t literal"', {"A": "keep \\n and \\t literal"}),
        ("A=$'tab\\there\\nnl \\'q\\' \\x41\\u00e9\\101'", {"A": "tab\there\nnl 'q' Aé" + "A"}),  # bash printf %q
        ("A=plain\\ with\\ escaped\\ spaces", {"A": "plain with escaped spaces"}),
        ("A=1 B=2; C=3", {"A": "1", "B": "2", "C": "3"}),
        ("A=", {"A": ""}),
        ("A=''", {"A": ""}),
        ("A='multi\nline'\nB=after", {"A": "multi\nline", "B": "after"}),
        ("A=x#not-a-comment", {"A": "x#not-a-comment"}),
        ("A=1\nA=2", {"A": "2"}),
    ],
)
def test_shell_quoting_forms(text: str, expected: dict[str, str]) -> None:
    assert parse_env_file(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("A=$HOME", "unquoted '$'"),
        ("A=`id`", "unquoted '`'"),
        ('A="$HOME"', "unescaped '$' inside double quotes"),
        ("A='open", "unterminated single quote"),
        ('A="open', "unterminated double quote"),
        ("1A=x", "expected NAME=VALUE"),
        ("just words", "expected NAME=VALUE"),
        ("A=x|y", "metacharacter '|'"),
    ],
)
def test_malformed_or_expanding_input_is_rejected_with_the_line(text: str, complaint: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_env_file(text, origin="f.env")
    assert complaint in str(err.value)
    assert str(err.value).startswith("f.env:1:")


def test_error_names_the_right_line() -> None:
    with pytest.raises(UsageError, match=r"^f:4: "):
        parse_env_file("A='x\ny'\nB=ok\nC=$bad", origin="f")


HOSTILE = [
    "it's",
    'say "hi"',
    "$HOME ${X} $(id) `id`",
    "a\nb\n",
    "\t x \t",
    "C:\\dir\\n",
    "żółć 🚀",
    "a;b&&c||d|e>f<g&(h)",
    "k=v,w",
    "",
    "#hash",
    "\x01\x1b\x7f",
    "'",
    '"',
    "\\",
    "$'",
]


@pytest.mark.parametrize("writer", ["shlex.quote", "printf %q"])
def test_agrees_with_bash_on_what_real_writers_emit(writer: str) -> None:
    # bash is the reference: source the same file and compare every value.
    values = {f"V{i}": v for i, v in enumerate(HOSTILE)}
    if writer == "shlex.quote":
        text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    else:
        script = "".join(f"printf '%s=%q\\n' {k} {shlex.quote(v)}\n" for k, v in values.items())
        text = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    dump = f"import json, os; print(json.dumps({{k: os.environ[k] for k in {list(values)!r}}}))"
    via_bash = subprocess.run(
        ["bash", "-c", f"set -a; source /dev/stdin; exec {shlex.quote(sys.executable)} -c {shlex.quote(dump)}"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert json.loads(via_bash.stdout) == values  # the writer is right ...
    assert parse_env_file(text) == values  # ... and the stand-in reads what bash reads


@settings(max_examples=50)
@given(env_values)
def test_printf_q_output_round_trips(value: str) -> None:
    text = subprocess.run(
        ["bash", "-c", 'printf "X=%q\\n" "$1"', "_", value], capture_output=True, text=True, check=True
    ).stdout
    assert parse_env_file(text) == {"X": value}
