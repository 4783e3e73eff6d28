"""Schema 1 -> 2: file identity by inode and ctime, and items without content.

Version 1 knew a file by (path, size, mtime_ns, sha256), which misses new content
written under the same name with the same size and mtime (a camera clock, a copy
that keeps the mtime), and every item needed a hash, so a file that could not be
read (a FIFO, a link, no permission) could not be recorded at all. Version 2 adds
``ctime_ns`` and ``inode`` (set by the kernel on every write or replacement), allows
a NULL ``sha256`` and makes (path, size, mtime_ns, ctime_ns, sha256) the unique key.

The DDL is spelled out here rather than taken from :mod:`inspectd.db.schema`, which
moves on with later versions; this step must keep producing version 2.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_SQLITE_ITEMS_V2 = """
CREATE TABLE items_v2 (
    id INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    ctime_ns BIGINT,
    inode BIGINT,
    sha256 VARCHAR(64),
    product VARCHAR(128) NOT NULL,
    station VARCHAR(128) NOT NULL,
    discovered_at DATETIME NOT NULL,
    state VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    updated_at DATETIME NOT NULL,
    claimed_at DATETIME,
    CONSTRAINT pk_items PRIMARY KEY (id),
    CONSTRAINT uq_items_landing UNIQUE (path, size, mtime_ns, ctime_ns, sha256),
    CONSTRAINT ck_items_state CHECK (state IN ('pending', 'scoring', 'done', 'error')),
    CONSTRAINT ck_items_attempts_non_negative CHECK (attempts >= 0),
    CONSTRAINT fk_items_product_products FOREIGN KEY(product) REFERENCES products (name)
)
"""

_V1_COLUMNS = ("id, path, file_name, size, mtime_ns, sha256, product, station, discovered_at, state, "
               "attempts, last_error, updated_at, claimed_at")

_INDEXES = (
    "CREATE INDEX ix_items_product_station ON items (product, station)",
    "CREATE INDEX ix_items_state_product_discovered ON items (state, product, discovered_at, id)",
    "CREATE INDEX ix_items_state_discovered ON items (state, discovered_at, id)",
)

_POSTGRESQL = (
    "ALTER TABLE items ADD COLUMN ctime_ns BIGINT, ADD COLUMN inode BIGINT",
    "ALTER TABLE items ALTER COLUMN sha256 DROP NOT NULL",
    "ALTER TABLE items DROP CONSTRAINT uq_items_identity",
    "ALTER TABLE items ADD CONSTRAINT uq_items_landing UNIQUE (path, size, mtime_ns, ctime_ns, sha256)",
)


def upgrade(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        _rebuild_sqlite(connection)
    else:
        for statement in _POSTGRESQL:
            connection.execute(text(statement))


def _rebuild_sqlite(connection: Connection) -> None:
    """SQLite cannot change a column's NOT NULL or a table constraint in place: build
    the new table, copy, drop the old one, rename (the runner has turned foreign keys
    off, so dropping ``items`` does not cascade to ``results``)."""
    connection.execute(text(_SQLITE_ITEMS_V2))
    connection.execute(text(f"INSERT INTO items_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM items"))
    connection.execute(text("DROP TABLE items"))
    connection.execute(text("ALTER TABLE items_v2 RENAME TO items"))
    for statement in _INDEXES:
        connection.execute(text(statement))
