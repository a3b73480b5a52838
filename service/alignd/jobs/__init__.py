"""Jobs: spec resolution, the status state machine, quotas."""
