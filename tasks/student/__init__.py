"""The student: how an example is shown to it, loading and running it, and the runtime interface every
way of running it shares. Imports only the core and storage.
"""
