"""Serving a GRAM judge to distributed RL engines: the HTTP reward server (``trl-gram serve``), the async remote
reward for TRL, and reward functions for verl. Needs the ``serve`` extra (fastapi, uvicorn, httpx)."""

from .config import ServeConfig
from .remote_reward import RemoteGenerativeRewardFunction

__all__ = ["BackgroundServer", "RemoteGenerativeRewardFunction", "ServeConfig", "create_app"]


def __getattr__(name):
    if name in ("create_app", "BackgroundServer"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'trl_gram.serving' has no attribute {name!r}")
