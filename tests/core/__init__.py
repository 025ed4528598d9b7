"""Tests of p2m's core."""
