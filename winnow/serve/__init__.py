"""``winnow serve``: an OpenAI-compatible HTTP server over any generation backend.

``schema`` holds the request and response bodies (pydantic models mirroring the OpenAI
schema), ``batcher`` groups concurrent requests into backend calls, ``app`` is the FastAPI
application (routes, auth, caps, Best-of-N) and ``main`` builds the backend and runs
uvicorn. Needs the ``serve`` extra (fastapi, uvicorn).
"""
