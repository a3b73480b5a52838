"""Webhooks: per-project endpoints that receive signed `fine_tuning.job.*` events.

- `signing`: Standard Webhooks signatures (pure);
- `events`: the event types and the event body;
- `outbox`: delivery rows written in the status change's own transaction;
- `targets`: which addresses a webhook may reach (public ones, unless an admin allows more);
- `failures`: a failed attempt's error class and sentence, never the receiver's words;
- `service`: endpoints and deliveries for the API;
- `dispatcher`: the loop that claims due deliveries, sends them and retries with backoff.

Kept free of imports from `alignd.jobs`, which imports `outbox`.
"""
