"""`mhsm key ...`: placeholder until the key commands land."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None
