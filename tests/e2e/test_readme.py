"""The README's quickstart, run as it is written: its commands on the repository's examples give
the output it shows (paths before `examples/` written `/…/`; scores to the last digit shown,
give or take one, since ONNX Runtime's kernels differ between CPUs)."""

from __future__ import annotations

import re

from tests.conftest import REPO, run_cli

NUMBER = re.compile(r"-?\d+\.\d{4}")


def quickstart() -> tuple[list[list[str]], str]:
    """The quickstart's `cbirq` commands before the first blank line of its bash block, and the
    output block that follows."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quickstart") :]
    commands, output = re.search(r"```bash\n(.*?)```\n\n```\n(.*?)```", section, re.S).groups()
    runs = [line.split("#")[0].split()[1:] for line in commands.splitlines()]
    return [run for run in runs if "--sheet" not in run], output


def same_but_last_digits(shown: str, printed: str) -> bool:
    if NUMBER.sub("N", shown) != NUMBER.sub("N", printed):
        return False
    pairs = zip(NUMBER.findall(shown), NUMBER.findall(printed))
    return all(abs(float(a) - float(b)) <= 1.5e-4 for a, b in pairs)


def test_the_quickstart_prints_what_the_readme_shows():
    (index, query), shown = quickstart()
    assert index[:2] == ["index", "examples/library"] and query[0] == "query"
    assert run_cli(*index).returncode == 0
    done = run_cli(*query)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.replace(f"{REPO}/", "/…/")
    assert same_but_last_digits(shown, printed), printed
    assert "* cosine under" in printed  # the example shows a result that is no likely match
