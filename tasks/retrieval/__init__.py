"""Retrieval: BM25, sentence encoders, the local registries and the index files. Imports only the core and storage."""
