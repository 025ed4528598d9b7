"""Progress for long stages: a bar on the terminal and a progress artifact in the Prefect UI."""

from __future__ import annotations

import sys

from tqdm import tqdm


class GenerationProgress:
    """Counts accepted examples against the target and shows requests and cost beside them."""

    def __init__(self, total: int):
        self.total = total
        self.bar = tqdm(total=total, desc="generate", unit="ex", file=sys.stderr, dynamic_ncols=True, disable=False)
        self.artifact_id = None
        try:
            from prefect.artifacts import create_progress_artifact

            self.artifact_id = create_progress_artifact(
                progress=0.0, key="generation-progress", description="Examples generated"
            )
        except Exception:  # outside a Prefect run, or no API: the terminal bar is enough
            self.artifact_id = None

    def update(self, accepted: int, usage: dict) -> None:
        self.bar.n = min(accepted, self.total)
        self.bar.set_postfix(
            requests=usage.get("requests", 0), cached=usage.get("cached", 0), cost=f"${usage.get('cost_usd', 0):.4f}"
        )
        self.bar.refresh()
        if self.artifact_id is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(
                    self.artifact_id, progress=100.0 * min(accepted, self.total) / max(1, self.total)
                )
            except Exception:
                self.artifact_id = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
