-- The guild's roster, its raids and the loot they drop.
-- Written once, for one guild: tenancy runs it for every tenant.
-- Ids are text; when a row arrives without one, the engine generates a UUIDv7.

CREATE TABLE members (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    class     TEXT,
    dkp       INTEGER NOT NULL DEFAULT 0,
    joined_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT members_name_key UNIQUE (name)
);

CREATE TABLE raids (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE items (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    quality TEXT NOT NULL DEFAULT 'common',
    CONSTRAINT items_quality_check
        CHECK (quality IN ('poor', 'common', 'uncommon', 'rare', 'epic', 'legendary'))
);

CREATE INDEX members_dkp_idx ON members (dkp);
CREATE INDEX raids_started_at_idx ON raids (started_at);
CREATE INDEX items_name_idx ON items (name);
