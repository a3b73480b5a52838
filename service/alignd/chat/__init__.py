"""`/v1/chat/completions`: replies from registered base models and a project's fine-tuned models.

`sources` finds what a model id names (a base location, plus a job's trained weights in the store),
`weights` brings those files to a local cache, `models` keeps a few loaded generators, and
`completions` answers one request with them.
"""
