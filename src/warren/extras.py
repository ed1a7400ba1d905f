"""The optional parts of Warren and the extras that bring their libraries: the etcd store
(``warren[etcd]``: aetcd, gRPC) and the docker driver (``warren[docker]``: aiodocker, aiohttp).
A core install has neither; the modules that use them are imported only when the store or driver
is chosen, inside ``needs_extra``. Imports nothing of Warren's but its errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from .domain.errors import MissingExtraError

__all__ = ["DOCKER", "ETCD", "Extra", "needs_extra"]


@dataclass(frozen=True)
class Extra:
    """One extra: its name in ``pip install 'warren[NAME]'``, what it enables (for the message),
    and the top-level modules of the libraries it installs."""

    name: str
    what: str
    modules: tuple[str, ...]

    def provides(self, module: str | None) -> bool:
        """Whether ``module`` (``grpc._cython``, say) comes with this extra."""
        top = (module or "").partition(".")[0]
        return top in self.modules


# protobuf's modules are under `google.` (aetcd needs it, through gRPC); yarl and multidict come
# with aiohttp.
ETCD = Extra("etcd", "the etcd store", ("aetcd", "grpc", "google"))
DOCKER = Extra("docker", "the docker driver", ("aiodocker", "aiohttp", "yarl", "multidict"))


@contextlib.contextmanager
def needs_extra(extra: Extra) -> Iterator[None]:
    """Around the import of a module that uses ``extra``'s libraries: a library that is missing
    becomes MissingExtraError (one line, naming the extra); any other missing module stays the
    bug it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if not extra.provides(exc.name):
            raise
        raise MissingExtraError(extra.what, extra.name) from exc
