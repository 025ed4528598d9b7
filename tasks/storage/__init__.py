"""Where things are: run locations (local paths or URLs), remote files, data files read as written,
models shipped in packages. Imports only the core.
"""
