"""The PostgreSQL schema's versions, ``NNNN_<what>.sql``, applied in order by
``bastion.stores.postgres.PostgresDatabase`` at start (see there). Never edit a released file:
add the next one."""
