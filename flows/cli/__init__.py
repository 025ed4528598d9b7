"""`p2m`: the command line, as command groups (pipeline, retrieval, deploy, ship, nightly); see main.py."""
