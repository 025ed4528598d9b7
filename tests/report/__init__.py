"""Tests of p2m's report."""
