"""Run machinery for the flows: the stages as Prefect tasks, their cache keys, per-stage tracking,
input checks, progress and the UI helpers (Run form, dataset choice).
"""
