"""The ``advlab`` command line: a thin layer over the Python API (the top floor; nothing in
advlab imports it).

* ``app``: the parser and ``list`` / ``train`` / ``finetune`` / ``attack``;
* ``options``: the options every command shares, parsed and checked in one place;
* ``evaluate``, ``reproduce`` (with ``audit``): the other commands.
"""

from __future__ import annotations

from advlab.cli.app import build_parser, main
from advlab.cli.options import attack_from_args

__all__ = ["main", "build_parser", "attack_from_args"]
