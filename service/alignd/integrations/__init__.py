"""Integrations: the control plane mirrors a job into a W&B or MLflow run (params, metric series as they
arrive, final artifacts' links), with the project's own credentials.

- `base`: the `Sink` protocol every integration type implements, and what it is fed;
- `content`: what goes out (params, metric points, links), pure;
- `credentials`: per-project credentials, stored sealed, never shown;
- `runs`: checking a job's integrations at creation and adding one run row per integration;
- `wandb`, `mlflow`: the sinks;
- `worker`: the loop that claims due runs and feeds their sinks, with retries, outside any transaction.

The `wandb` package is imported only when a W&B run is opened (the `integrations` extra); MLflow is
spoken to over its REST API, so it needs no package.
"""
