"""Bastion's stores: one small async protocol per kind of state, each with its backends.

Every store shares ``Lifecycle`` (``start``/``close`` or ``async with``). Times in anything a
shared backend would keep are wall-clock epoch seconds (``time.time()``); values a store
returns are not changed by their callers (changes go back through the store). Each
protocol has ONE contract suite, run against every backend of that kind, in
``tests/unit/stores/test_contract_<kind>.py``; a shared backend (PostgreSQL, Redis) joins a
kind by adding itself to that suite's ``BACKENDS``. Shared backends so far: rate counters in Redis
(``stores.redis_counters.RedisRateCounter``), sessions, continuations and session activity in Redis
(``stores.redis_sessions.RedisSessionStore``, with its ledgers' shared entries in ``stores.redis_ledger``,
``stores.redis_continuations.RedisContinuationStore``,
``stores.redis_activity.RedisActivityStore``) and revocations in PostgreSQL (``stores.postgres_revocations.
PostgresRevocationStore``, on ``stores.postgres.PostgresDatabase``: one pool per process, the schema
migrated at start from ``stores/migrations/``), and the audit log in PostgreSQL
(``audit.store_postgres``: one chain for every replica); approvals, definition pins and result
volume baselines in PostgreSQL (``approvals.store_postgres``, ``catalog.pins_postgres``,
``stores.postgres_volume``, each a ``stores.postgres_tables.PostgresTables``), and so are the
token vault (``credentials.vault_postgres``) and the authorization server's records
(``oauth.store_postgres_flows``, ``oauth.store_postgres_grants``; both: ``oauth.store_postgres``).
``stores.backends`` builds what a
configuration asks for. Only the embedded SQLite backends touch SQLite
(``tests/unit/stores/test_stores_layout.py`` pins that).

========================  =========================================  ===========================================
kind                      protocol                                   embedded backend
========================  =========================================  ===========================================
sessions                  ``stores.sessions.SessionStore``           ``stores.memory_sessions.MemorySessionStore``
revocations               ``stores.revocations.RevocationStore``     ``identity.revocation.RevocationList``
authorization, flows      ``oauth.store.AuthorizationFlowStore``     ``oauth.store_sqlite_flows.SQLiteFlowStore``
authorization, grants     ``oauth.store.AuthorizationGrantStore``    ``oauth.store_sqlite_grants.SQLiteGrantStore``
token vault               ``credentials.vault_store.VaultStore``     ``credentials.vault_sqlite.SQLiteVaultStore``
rate counters             ``stores.counters.RateCounter``            ``stores.memory_counters.MemoryRateCounter``,
                                                                     ``stores.sqlite_counters.SQLiteRateCounter``
audit log (write / read)  ``audit.store.AuditLog`` / ``AuditReader``  ``audit.store_sqlite.SQLiteAuditLog`` /
                                                                     ``audit.query.SQLiteAuditReader``
tool catalog              ``catalog.store.CatalogStore``             ``catalog.store.MemoryCatalogStore``
continuations             ``stores.continuations.ContinuationStore`` ``stores.memory_continuations.``
                                                                     ``MemoryContinuationStore``
session activity          ``stores.activity.ActivityStore``          ``stores.memory_activity.MemoryActivityStore``
result volume baselines   ``stores.volume.VolumeStore``              ``stores.sqlite_volume.SQLiteVolumeStore``,
                                                                     ``stores.memory_volume.MemoryVolumeStore``
pinned definitions        ``catalog.pins.PinStore``                  ``catalog.pins_sqlite.SQLitePinStore``,
                                                                     ``catalog.pins_memory.MemoryPinStore``
========================  =========================================  ===========================================

The protocols of the authorization server, the vault and the audit log live beside the
records they keep (``oauth.records``, the vault's ``Sealed``, ``audit.record``); this package
holds the kinds that have no package of their own, the shared ``Lifecycle`` and the SQLite
connection code (``stores.sqlite.SQLiteTables``). ``SQLiteAuthorizationStore`` serves both
authorization protocols on one connection (the gateway's default).
"""
