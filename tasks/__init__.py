"""p2m's work, in layers: each folder is a room with one job, and imports only the rooms below it.

core (config, errors, spec, run store, small helpers) < storage (locations, remote files, data
files) < teacher, retrieval, student (side by side, never importing each other) < report < ship
< nightly; stages (one module per stage) sit on top and never import each other. Prefect stays
out: `p2m.flows.run.stage_tasks` wraps the stages as cached, retryable Prefect tasks.
"""
