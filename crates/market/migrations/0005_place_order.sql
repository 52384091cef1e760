-- A user's positions with their trade totals, by symbol, and the version
-- they are at: the user's newest order id (market_place_order serializes
-- the orders of one user, so ids follow commits). One row with a NULL
-- symbol for a user who holds nothing, none for an unknown user.
CREATE FUNCTION market_positions(p_user BIGINT)
RETURNS TABLE (user_id BIGINT, symbol TEXT, name TEXT, quantity BIGINT,
               cost_basis DOUBLE PRECISION, bought BIGINT, sold BIGINT, version BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT u.id, i.symbol, i.name, p.quantity, p.cost_basis,
           coalesce(t.bought, 0)::BIGINT, coalesce(t.sold, 0)::BIGINT,
           (SELECT coalesce(max(o.id), 0) FROM orders o WHERE o.user_id = u.id)
    FROM users u
    LEFT JOIN positions p ON p.user_id = u.id
    LEFT JOIN instruments i ON i.id = p.instrument_id
    LEFT JOIN LATERAL (
        SELECT sum(quantity) FILTER (WHERE side = 'buy') AS bought,
               sum(quantity) FILTER (WHERE side = 'sell') AS sold
        FROM trades WHERE user_id = u.id AND instrument_id = p.instrument_id) AS t ON TRUE
    WHERE u.id = p_user
    ORDER BY i.symbol
$$;

-- An instrument's holders and trades, and the version they are at: its
-- newest trade id (market_place_order serializes the orders of one
-- instrument, so ids follow commits).
CREATE FUNCTION market_ownership(p_instrument INTEGER)
RETURNS TABLE (holders BIGINT, shares_held BIGINT, trade_count BIGINT,
               traded_quantity BIGINT, version BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT h.holders, h.shares_held, t.trade_count, t.traded_quantity, t.version
    FROM (SELECT count(*) AS holders, coalesce(sum(quantity), 0)::BIGINT AS shares_held
          FROM positions WHERE instrument_id = p_instrument) AS h,
         (SELECT count(*) AS trade_count, coalesce(sum(quantity), 0)::BIGINT AS traded_quantity,
                 coalesce(max(id), 0)::BIGINT AS version
          FROM trades WHERE instrument_id = p_instrument) AS t
$$;

-- An order in one round trip. The checks, the order, its trade and the
-- position change run here, in the one transaction of the statement that
-- calls it, instead of seven statements sent one by one: on a busy machine
-- each round trip waits for a core, and orders are the slowest requests of
-- the cached service. Nothing is written unless the outcome is 'filled'.
-- The user's and the instrument's rows are locked, so orders of one user
-- (of one instrument) commit one after the other and their ids are the
-- versions of what they change; the answer carries the user's positions
-- and the instrument's ownership as of the order, for the cache.
CREATE FUNCTION market_place_order(
    p_user BIGINT, p_symbol TEXT, p_side TEXT, p_quantity BIGINT, p_limit DOUBLE PRECISION)
RETURNS TABLE (outcome TEXT, order_id BIGINT, fill_price DOUBLE PRECISION,
               last_price DOUBLE PRECISION, held BIGINT,
               holders BIGINT, shares_held BIGINT, trade_count BIGINT, traded_quantity BIGINT,
               ownership_version BIGINT,
               symbols TEXT[], names TEXT[], quantities BIGINT[], cost_bases DOUBLE PRECISION[],
               bought BIGINT[], sold BIGINT[], positions_version BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_instrument INTEGER;
    v_last DOUBLE PRECISION;
    v_held BIGINT;
    v_order BIGINT;
BEGIN
    PERFORM 1 FROM users WHERE id = p_user FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_user'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION,
            NULL::DOUBLE PRECISION, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
            NULL::BIGINT, NULL::BIGINT, NULL::TEXT[], NULL::TEXT[], NULL::BIGINT[],
            NULL::DOUBLE PRECISION[], NULL::BIGINT[], NULL::BIGINT[], NULL::BIGINT;
        RETURN;
    END IF;
    SELECT i.id INTO v_instrument FROM instruments i WHERE i.symbol = p_symbol FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_symbol'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION,
            NULL::DOUBLE PRECISION, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
            NULL::BIGINT, NULL::BIGINT, NULL::TEXT[], NULL::TEXT[], NULL::BIGINT[],
            NULL::DOUBLE PRECISION[], NULL::BIGINT[], NULL::BIGINT[], NULL::BIGINT;
        RETURN;
    END IF;
    SELECT coalesce((SELECT p.price FROM prices p WHERE p.instrument_id = v_instrument
                     ORDER BY p.ts DESC LIMIT 1), 0)
      INTO v_last;
    IF p_limit IS NOT NULL AND ((p_side = 'buy' AND p_limit < v_last)
                                OR (p_side = 'sell' AND p_limit > v_last)) THEN
        RETURN QUERY SELECT 'not_marketable'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION,
            v_last, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
            NULL::BIGINT, NULL::BIGINT, NULL::TEXT[], NULL::TEXT[], NULL::BIGINT[],
            NULL::DOUBLE PRECISION[], NULL::BIGINT[], NULL::BIGINT[], NULL::BIGINT;
        RETURN;
    END IF;
    SELECT p.quantity INTO v_held FROM positions p
     WHERE p.user_id = p_user AND p.instrument_id = v_instrument FOR UPDATE;
    IF p_side = 'sell' AND coalesce(v_held, 0) < p_quantity THEN
        RETURN QUERY SELECT 'not_held'::TEXT, NULL::BIGINT, NULL::DOUBLE PRECISION,
            v_last, coalesce(v_held, 0), NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
            NULL::BIGINT, NULL::BIGINT, NULL::TEXT[], NULL::TEXT[], NULL::BIGINT[],
            NULL::DOUBLE PRECISION[], NULL::BIGINT[], NULL::BIGINT[], NULL::BIGINT;
        RETURN;
    END IF;
    INSERT INTO orders (user_id, instrument_id, side, quantity, limit_price, status, created_at)
    VALUES (p_user, v_instrument, p_side, p_quantity, p_limit, 'filled', now())
    RETURNING id INTO v_order;
    INSERT INTO trades (order_id, user_id, instrument_id, side, quantity, price, executed_at)
    VALUES (v_order, p_user, v_instrument, p_side, p_quantity, v_last, now());
    IF p_side = 'buy' THEN
        INSERT INTO positions AS pos (user_id, instrument_id, quantity, cost_basis)
        VALUES (p_user, v_instrument, p_quantity, v_last)
        ON CONFLICT (user_id, instrument_id) DO UPDATE SET
            cost_basis = (pos.cost_basis * pos.quantity + EXCLUDED.cost_basis * EXCLUDED.quantity)
                         / (pos.quantity + EXCLUDED.quantity),
            quantity = pos.quantity + EXCLUDED.quantity;
    ELSIF v_held = p_quantity THEN
        DELETE FROM positions p WHERE p.user_id = p_user AND p.instrument_id = v_instrument;
    ELSE
        UPDATE positions p SET quantity = p.quantity - p_quantity
         WHERE p.user_id = p_user AND p.instrument_id = v_instrument;
    END IF;
    RETURN QUERY
    SELECT 'filled'::TEXT, v_order, v_last, v_last, v_held,
           o.holders, o.shares_held, o.trade_count, o.traded_quantity, o.version,
           m.symbols, m.names, m.quantities, m.cost_bases, m.bought, m.sold, m.version
    FROM market_ownership(v_instrument) AS o,
         (SELECT array_agg(mp.symbol ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS symbols,
                 array_agg(mp.name ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS names,
                 array_agg(mp.quantity ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS quantities,
                 array_agg(mp.cost_basis ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS cost_bases,
                 array_agg(mp.bought ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS bought,
                 array_agg(mp.sold ORDER BY mp.symbol) FILTER (WHERE mp.symbol IS NOT NULL) AS sold,
                 max(mp.version) AS version
          FROM market_positions(p_user) AS mp) AS m;
END
$$;
