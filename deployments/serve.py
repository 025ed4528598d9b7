"""Serve the flows from one long-running process (needs a Prefect server: PREFECT_API_URL).

    prefect server start --host 127.0.0.1 --port 4200 --analytics-off    # in another terminal
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve

Registers `p2m-pipeline/serve` and `p2m-generate/nightly` (02:00 every night) and runs their
flow runs in this process, so runs can be started from the Prefect UI. Work pools (a `gpu` pool
for training) come with issue 6.
"""

from __future__ import annotations

from prefect import serve

from flows.generate import generate_flow
from flows.pipeline import pipeline


def main() -> None:
    serve(
        pipeline.to_deployment(name="serve", description="The full pipeline for a prompt file."),
        generate_flow.to_deployment(name="nightly", cron="0 2 * * *", description="Regenerate training data nightly."),
    )


if __name__ == "__main__":
    main()
