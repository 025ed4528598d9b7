"""The eight stages, one module each: parse, retrieve_datasets, generate, retrieve_model, process,
train, evaluate, demo. A stage never imports another stage.
"""
