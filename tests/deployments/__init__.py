"""Tests of p2m's deployments."""
