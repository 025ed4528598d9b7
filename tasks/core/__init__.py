"""The core: settings, errors, the task spec, the run folder, and small helpers every layer uses.
Imports only itself.
"""
