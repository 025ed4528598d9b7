"""Tests of p2m's storage."""
