"""Serve the API: ``python -m app`` (settings from FASHION_* environment variables)."""

from __future__ import annotations

import argparse

import uvicorn

from app.main import create_app
from model.progress import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the recommendation API with uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    configure_logging()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
