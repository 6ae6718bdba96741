"""The built-in adserving handlers under their public name:
``streamtasks worker streamtasks.builtins:registry``, or
``my_registry.include(streamtasks.builtins.registry)``. The code lives in
:mod:`streamtasks.adserving.handlers`."""

from .adserving.handlers import (
    DEFAULT_GROUP,
    FORWARDED_ENV_PREFIXES,
    database_pool,
    make_registry,
    registry,
    store_inference_batch,
    store_training_batch,
)

__all__ = [
    "DEFAULT_GROUP",
    "FORWARDED_ENV_PREFIXES",
    "database_pool",
    "make_registry",
    "registry",
    "store_inference_batch",
    "store_training_batch",
]
