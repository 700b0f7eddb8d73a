"""`mhsm completion bash|zsh`: a shell completion script made from the argparse parser itself, so
it knows every command, subcommand, flag and flag choice there is, and never goes stale.

    source <(mhsm completion bash)   # or save it as ~/.local/share/bash-completion/completions/mhsm
    source <(mhsm completion zsh)    # zsh runs the same function through bashcompinit

The script walks the words typed so far to find the command path (`key create`), then offers
that path's subcommands, its flags (after `-`), a flag's choices (`--kty`, `-o`), or file names
for other flag values.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh")


@dataclass
class Node:
    """One command path of the parser tree: what can follow it."""

    path: str
    commands: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    valued: list[str] = field(default_factory=list)  # flags that take a value
    choices: dict[str, list[str]] = field(default_factory=dict)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)"
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    completion.set_defaults(run=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    from openmhsm.cli.main import build_parser  # main imports this module

    print(script(build_parser(), args.shell), end="")
    return 0


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Node]:
    """Every command path under `parser` (itself first); hidden commands (no help) are left out."""
    node = Node(path)
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            visible = {choice.dest for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if name in visible:
                    node.commands.append(name)
                    children.append((name, sub))
            continue
        node.flags += action.option_strings
        if action.option_strings and action.nargs != 0:
            node.valued += action.option_strings
            if action.choices is not None:
                for flag in action.option_strings:
                    node.choices[flag] = [str(c) for c in action.choices]
    yield node
    for name, sub in children:
        yield from walk(sub, f"{path} {name}".strip())


def _case(arms: list[tuple[str, list[str]]]) -> str:
    lines = [
        f"        {shlex.quote(key)}) echo {shlex.quote(' '.join(words))} ;;" for key, words in arms
    ]
    return "\n".join(['    case "$1" in', *lines, "    esac"])


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh")."""
    nodes = list(walk(parser))
    commands = _case([(n.path, n.commands) for n in nodes if n.commands])
    flags = _case([(n.path, n.flags) for n in nodes if n.flags])
    valued = _case([(n.path, n.valued) for n in nodes if n.valued])
    choices = _case([(f"{n.path}|{f}", c) for n in nodes for f, c in n.choices.items()])
    prog = parser.prog
    head = "" if shell == "bash" else _ZSH_HEAD
    return head + _BASH_TEMPLATE.replace("@COMMANDS@", commands).replace("@FLAGS@", flags).replace(
        "@VALUED@", valued
    ).replace("@CHOICES@", choices).replace("@PROG@", prog)


_ZSH_HEAD = """\
# zsh: bash's completion function, run through bashcompinit.
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
"""

_BASH_TEMPLATE = """\
# @PROG@ shell completion, made by `@PROG@ completion` from its argument parser.
_@PROG@_commands() {
@COMMANDS@
}
_@PROG@_flags() {
@FLAGS@
}
_@PROG@_valued() {
@VALUED@
}
_@PROG@_choices() {
@CHOICES@
}
_@PROG@() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="" word i
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        [[ "$word" == -* ]] && continue
        if [[ " $(_@PROG@_commands "$path") " == *" $word "* ]]; then
            path="${path:+$path }$word"
        fi
    done
    if [[ "$prev" == -* && " $(_@PROG@_valued "$path") " == *" $prev "* ]]; then
        local choices
        choices="$(_@PROG@_choices "$path|$prev")"
        if [[ -n "$choices" ]]; then
            COMPREPLY=($(compgen -W "$choices" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_@PROG@_flags "$path")" -- "$cur"))
        return 0
    fi
    local commands
    commands="$(_@PROG@_commands "$path")"
    if [[ -n "$commands" ]]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}
complete -F _@PROG@ @PROG@
"""
