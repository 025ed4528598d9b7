"""Tests of p2m's retrieval."""
