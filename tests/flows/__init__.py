"""Tests of p2m's flows."""
