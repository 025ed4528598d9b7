"""`p2m`: the command line, as command groups (pipeline, retrieval, deploy, ship, nightly)."""

from p2m.flows.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
