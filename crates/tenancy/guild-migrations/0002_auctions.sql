-- Loot is auctioned for DKP: members bid, the highest bid wins when the auction closes.

CREATE TABLE auctions (
    id         TEXT PRIMARY KEY,
    item_id    TEXT NOT NULL REFERENCES items (id),
    raid_id    TEXT REFERENCES raids (id),
    status     TEXT NOT NULL DEFAULT 'open',
    min_bid    INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    closes_at  TIMESTAMPTZ,
    CONSTRAINT auctions_status_check CHECK (status IN ('open', 'closed', 'cancelled')),
    CONSTRAINT auctions_min_bid_check CHECK (min_bid >= 0)
);

CREATE TABLE bids (
    id         TEXT PRIMARY KEY,
    auction_id TEXT NOT NULL REFERENCES auctions (id) ON DELETE CASCADE,
    member_id  TEXT NOT NULL REFERENCES members (id),
    amount     INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT bids_amount_check CHECK (amount > 0)
);

-- Open auctions by closing time: the "what is up for bidding" screen.
CREATE INDEX auctions_status_closes_at_idx ON auctions (status, closes_at);
CREATE INDEX auctions_item_id_idx ON auctions (item_id);
CREATE INDEX auctions_raid_id_idx ON auctions (raid_id);
-- The bids of one auction, highest first.
CREATE INDEX bids_auction_id_amount_idx ON bids (auction_id, amount);
-- A member's bidding history (and the foreign key's lookups).
CREATE INDEX bids_member_id_idx ON bids (member_id);
