"""Schema 2 -> 3: the model-version life cycle and idempotent review writes.

Adds ``model_activations`` (which version of a product is active, with its history),
``good_set_images`` (images added to a product's good set from the review app) and
``reviews.client_id`` (a decision retried after a lost answer is stored once).

The DDL is spelled out here rather than taken from :mod:`inspectd.db.schema`, which
moves on with later versions; this step must keep producing version 3.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

# {key}: the id column type, {ref}: a column referring to an id, {time}: a UTC timestamp.
_TABLES = (
    """CREATE TABLE IF NOT EXISTS model_activations (
        id {key} NOT NULL,
        product VARCHAR(128) NOT NULL,
        version VARCHAR(32) NOT NULL,
        previous_version VARCHAR(32),
        activated_by VARCHAR(128) NOT NULL,
        activated_at {time} NOT NULL,
        reason TEXT NOT NULL,
        review_id {ref},
        CONSTRAINT pk_model_activations PRIMARY KEY (id),
        CONSTRAINT fk_model_activations_product_products FOREIGN KEY(product) REFERENCES products (name),
        CONSTRAINT fk_model_activations_review_id_reviews FOREIGN KEY(review_id) REFERENCES reviews (id)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_model_activations_product_id ON model_activations (product, id)",
    """CREATE TABLE IF NOT EXISTS good_set_images (
        id {key} NOT NULL,
        product VARCHAR(128) NOT NULL,
        item_id {ref} NOT NULL,
        review_id {ref} NOT NULL,
        sha256 VARCHAR(64) NOT NULL,
        kept_as VARCHAR NOT NULL,
        added_by VARCHAR(128) NOT NULL,
        added_at {time} NOT NULL,
        active_before VARCHAR(32),
        candidate_version VARCHAR(32),
        removed_at {time},
        removed_by VARCHAR(128),
        CONSTRAINT pk_good_set_images PRIMARY KEY (id),
        CONSTRAINT fk_good_set_images_product_products FOREIGN KEY(product) REFERENCES products (name),
        CONSTRAINT fk_good_set_images_item_id_items FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE,
        CONSTRAINT uq_good_set_images_review_id UNIQUE (review_id),
        CONSTRAINT fk_good_set_images_review_id_reviews FOREIGN KEY(review_id) REFERENCES reviews (id)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_good_set_images_product_sha256 ON good_set_images (product, sha256)",
)
_CLIENT_ID = ("ALTER TABLE reviews ADD COLUMN client_id VARCHAR(36)",
              "CREATE UNIQUE INDEX IF NOT EXISTS ix_reviews_client_id ON reviews (client_id)")
_TYPES = {
    "sqlite": {"key": "INTEGER", "ref": "INTEGER", "time": "DATETIME"},
    "postgresql": {"key": "BIGSERIAL", "ref": "BIGINT", "time": "TIMESTAMP WITH TIME ZONE"},
}


def upgrade(connection: Connection) -> None:
    """IF NOT EXISTS throughout: a reviews table that an earlier step built from the
    current models (tests of older upgrades do) already has what this step adds."""
    types = _TYPES.get(connection.dialect.name, _TYPES["postgresql"])
    for statement in _TABLES:
        connection.execute(text(statement.format(**types)))
    has_client_id = "client_id" in {column["name"] for column in inspect(connection).get_columns("reviews")}
    for statement in _CLIENT_ID[1:] if has_client_id else _CLIENT_ID:
        connection.execute(text(statement))
