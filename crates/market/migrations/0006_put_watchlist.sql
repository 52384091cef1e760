-- A watchlist replaced in one round trip (five statements before): the
-- user's row locked, the symbols checked, the list replaced, all in the one
-- transaction of the statement that calls it. Nothing changes unless the
-- outcome is 'replaced'; 'unknown_symbols' names them in the order given.
CREATE FUNCTION market_put_watchlist(p_user BIGINT, p_symbols TEXT[])
RETURNS TABLE (outcome TEXT, unknown TEXT[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids INTEGER[];
    v_unknown TEXT[];
BEGIN
    PERFORM 1 FROM users WHERE id = p_user FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_user'::TEXT, NULL::TEXT[];
        RETURN;
    END IF;
    SELECT array_agg(s.symbol ORDER BY s.ord) FILTER (WHERE i.id IS NULL),
           array_agg(i.id ORDER BY s.ord)
      INTO v_unknown, v_ids
      FROM unnest(p_symbols) WITH ORDINALITY AS s(symbol, ord)
      LEFT JOIN instruments i ON i.symbol = s.symbol;
    IF v_unknown IS NOT NULL THEN
        RETURN QUERY SELECT 'unknown_symbols'::TEXT, v_unknown;
        RETURN;
    END IF;
    DELETE FROM watchlists w WHERE w.user_id = p_user;
    INSERT INTO watchlists (user_id, position, instrument_id)
    SELECT p_user, t.ord::INTEGER, t.id FROM unnest(v_ids) WITH ORDINALITY AS t(id, ord);
    RETURN QUERY SELECT 'replaced'::TEXT, NULL::TEXT[];
END
$$;
