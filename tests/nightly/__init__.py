"""Tests of p2m's nightly."""
