"""alignd's trainer: base model + preference pairs -> DPO-aligned adapter (or full weights)."""
