"""The nightly loop's bookkeeping: the fixed test set, the data pool, promotion and rollback, and the
promotion gate. Never imports a stage.
"""
