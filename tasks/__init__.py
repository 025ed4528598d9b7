"""p2m stages: one module per stage, plus the shared pieces (config, LLM client, run store).

Every stage is a plain function that takes data and a config and returns data; `p2m.tasks.stages`
wraps them as cached, retryable Prefect tasks.
"""
