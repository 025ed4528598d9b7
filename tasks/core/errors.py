"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2."""


class P2MError(Exception):
    """A problem with the user's input, configuration or environment; the message says what to do."""


class BadInputError(P2MError):
    """Retrying cannot fix this: Prefect retries stop at once (see `p2m.flows.run.stage_tasks`)."""
