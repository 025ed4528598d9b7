"""Tests of p2m's teacher."""
