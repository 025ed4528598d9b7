"""Tests of p2m's stages."""
