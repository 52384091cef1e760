-- The market's source of truth. Every table the seed articles' platform
-- talks about, with the indexes its queries need.

CREATE TABLE exchanges (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    country     TEXT NOT NULL,
    currency    TEXT NOT NULL
);

CREATE TABLE sectors (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL
);

CREATE TABLE instruments (
    id          INTEGER PRIMARY KEY,
    symbol      TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    exchange_id INTEGER NOT NULL REFERENCES exchanges (id),
    sector_id   INTEGER NOT NULL REFERENCES sectors (id),
    listed_on   DATE NOT NULL
);
CREATE INDEX instruments_sector ON instruments (sector_id);
CREATE INDEX instruments_exchange ON instruments (exchange_id);

CREATE TABLE fundamentals (
    instrument_id      INTEGER PRIMARY KEY REFERENCES instruments (id),
    market_cap         DOUBLE PRECISION NOT NULL,
    pe_ratio           DOUBLE PRECISION NOT NULL,
    dividend_yield     DOUBLE PRECISION NOT NULL,
    eps                DOUBLE PRECISION NOT NULL,
    shares_outstanding BIGINT NOT NULL
);

-- The price history: one tick per instrument per step. The newest tick is
-- the current price; a PUT of the price appends one.
CREATE TABLE prices (
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    ts            TIMESTAMPTZ NOT NULL,
    price         DOUBLE PRECISION NOT NULL,
    volume        BIGINT NOT NULL,
    PRIMARY KEY (instrument_id, ts)
);

-- The order book: levels on both sides.
CREATE TABLE market_depth (
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    side          TEXT NOT NULL CHECK (side IN ('bid', 'ask')),
    level         INTEGER NOT NULL,
    price         DOUBLE PRECISION NOT NULL,
    quantity      BIGINT NOT NULL,
    PRIMARY KEY (instrument_id, side, level)
);

CREATE TABLE users (
    id            BIGINT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    -- sha256 of 'market:' || username || ':' || password
    password_hash BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE profiles (
    user_id      BIGINT PRIMARY KEY REFERENCES users (id),
    display_name TEXT NOT NULL,
    email        TEXT NOT NULL,
    country      TEXT NOT NULL,
    risk_level   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE watchlists (
    user_id       BIGINT NOT NULL REFERENCES users (id),
    position      INTEGER NOT NULL,
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    PRIMARY KEY (user_id, position)
);

CREATE TABLE positions (
    user_id       BIGINT NOT NULL REFERENCES users (id),
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    quantity      BIGINT NOT NULL,
    cost_basis    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, instrument_id)
);
CREATE INDEX positions_instrument ON positions (instrument_id);

CREATE TABLE orders (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    side          TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity      BIGINT NOT NULL CHECK (quantity > 0),
    limit_price   DOUBLE PRECISION,
    status        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_user ON orders (user_id);

CREATE TABLE trades (
    id            BIGSERIAL PRIMARY KEY,
    order_id      BIGINT REFERENCES orders (id),
    user_id       BIGINT NOT NULL REFERENCES users (id),
    instrument_id INTEGER NOT NULL REFERENCES instruments (id),
    side          TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity      BIGINT NOT NULL,
    price         DOUBLE PRECISION NOT NULL,
    executed_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX trades_user_instrument ON trades (user_id, instrument_id);
CREATE INDEX trades_instrument ON trades (instrument_id);

CREATE TABLE view_counts (
    instrument_id INTEGER PRIMARY KEY REFERENCES instruments (id),
    views         BIGINT NOT NULL
);

-- What `market seed` built, so a second run can tell it is done.
CREATE TABLE seed_info (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    scale       DOUBLE PRECISION NOT NULL,
    instruments INTEGER NOT NULL,
    users       BIGINT NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL
);
