"""Tests of p2m's ship."""
