"""The adserving product on streamtasks: ML training data and inference results into PostgreSQL.

==================  ===============================================================
:mod:`.records`     pure parsing and validation of entries into records
:mod:`.store`       idempotent COPY of records into the tables (asyncpg)
:mod:`.handlers`    the built-in registry (also :mod:`streamtasks.builtins`)
:mod:`.db`          schema access, pools, health and model statistics
:mod:`.config`      the product's settings from the environment and ``.env``
:mod:`.system`      :class:`AsyncProcessingSystem`, the facade an ad-serving API uses
:mod:`.cli`         ``streamtasks db`` and ``streamtasks stats``
==================  ===============================================================
"""
