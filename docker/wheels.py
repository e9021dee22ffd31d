"""Installs one part of a wheelhouse that a find-links page lists (the build's WHEELS):

    WHEELS=http://127.0.0.1:8731/ python3 docker/wheels.py 2 4   the second of four parts

Docker's classic builder copies a step's files once more when it commits them as a layer, and
pip keeps every wheel it downloads until it has installed them all: torch's wheels (3 GB) in
one step took 11 GB of disk at once, more than a CI machine had. Parts of about equal size, one
step each, and a few hundred MB of wheels per pip run keep it near the image's own size.
Without WHEELS it does nothing: pip installs from the index in the step after. Stdlib only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

PIP_RUN_BYTES = 512 * 2**20


def listed(page: str) -> dict[str, int]:
    """Each wheel the page links to, by URL, with its size from a HEAD request."""
    with urllib.request.urlopen(page) as response:
        html = response.read().decode()
    urls = {urllib.parse.urljoin(page, href) for href in re.findall(r'href="([^"]+\.whl)"', html)}
    sizes = {}
    for url in urls:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
            sizes[url] = int(response.headers["Content-Length"])
    return sizes


def largest_first(sizes: dict[str, int]) -> list[str]:
    return sorted(sizes, key=lambda url: (-sizes[url], url))


def parts(sizes: dict[str, int], count: int) -> list[list[str]]:
    """The wheels in `count` parts of about equal size: each, largest first, to the smallest."""
    shares: list[list[str]] = [[] for _ in range(count)]
    totals = [0] * count
    for url in largest_first(sizes):
        smallest = totals.index(min(totals))
        shares[smallest].append(url)
        totals[smallest] += sizes[url]
    return shares


def pip_runs(sizes: dict[str, int], limit: int = PIP_RUN_BYTES) -> list[list[str]]:
    """The wheels in runs of at most `limit` bytes (a bigger wheel alone), largest first."""
    runs: list[list[str]] = []
    room = 0
    for url in largest_first(sizes):
        if not runs or sizes[url] > room:
            runs.append([])
            room = limit
        runs[-1].append(url)
        room -= sizes[url]
    return runs


def install(page: str, part: int, count: int) -> None:
    sizes = listed(page)
    mine = {url: sizes[url] for url in parts(sizes, count)[part - 1]}
    for run in pip_runs(mine):
        subprocess.run(["pip", "install", "-q", "--no-index", "--no-deps", *run], check=True)


if __name__ == "__main__":
    if os.environ.get("WHEELS"):
        install(os.environ["WHEELS"], int(sys.argv[1]), int(sys.argv[2]))
