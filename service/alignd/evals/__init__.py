"""OpenAI's Evals API (the subset alignd runs): evals, their runs and the runs' graded output items."""
