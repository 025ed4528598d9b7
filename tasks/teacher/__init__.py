"""The teacher LLM: its client (pacing, retries, request cache), replicas, shared limits, the local
llama.cpp teacher, its models, and the prompts and their templates. Imports only the core and
storage.
"""
