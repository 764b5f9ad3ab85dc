"""The local host: a standalone ASGI server (uvicorn) over sqlite3, aiohttp and asyncio."""
