"""The OpenAI-compatible HTTP server and its web chat (`python -m infer serve`).

    app.py       the FastAPI routes, authentication, body limit, CORS
    schema.py    request bodies: types, ranges and the fields this server refuses
    worker.py    the engine thread and its bounded queue of jobs
    responses.py OpenAI's response, chunk and usage objects
    tool_calls.py the model's tool calls as OpenAI's tool_calls (the client runs the tool)
    errors.py    OpenAI's error shape
    chat.html    the web chat served at `/`
"""
