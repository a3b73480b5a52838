"""Jobs: the lifecycle (statuses, their moves, run-end reasons), the one door for status changes
(`state.transition`), spec resolution, quotas, trainer reports, artifacts, and the wire objects."""
