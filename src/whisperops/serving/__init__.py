"""Serve transcription over HTTP with OpenAI's audio API: uvicorn locally, Ray Serve to scale."""

from __future__ import annotations

from whisperops.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(settings: ServeSettings | None = None):
    """The FastAPI app for ``settings`` (see ``whisperops.serving.app.create_app``).

    A lazy re-export, so importing the settings does not import FastAPI.
    """
    from whisperops.serving.app import create_app as _create_app

    return _create_app(settings)
