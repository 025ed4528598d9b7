"""Tests of the flows, their run machinery and the CLI."""
