"""``polyfuse serve`` and ``polyfuse export``: a trained pipeline answering requests over HTTP, or exported.

Needs FastAPI and uvicorn (``pip install 'polyfuse[serve]'``), imported only by the commands.
"""
