"""The chatbot arena: two anonymous models answer one prompt, a person votes, SQLite keeps it.

`votes` is the database of battles, `app` the FastAPI application and its pages; the command is
`python -m evals arena` (evals/cli_arena.py) and the ratings come from `evals.ratings`.
"""
