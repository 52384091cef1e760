-- Deterministic pseudo-random numbers for the seeder: the same seed gives
-- the same data set on every run and every machine of the same architecture.
CREATE FUNCTION market_rand(seed BIGINT) RETURNS DOUBLE PRECISION
    LANGUAGE SQL IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8(seed)::BIGINT + 2147483648)::DOUBLE PRECISION / 4294967296.0 $$;

-- Four letters from an id: a bijection on [0, 26^4) (104729 is prime and
-- coprime with 26^4), so symbols are unique and look random.
CREATE FUNCTION market_symbol(id INTEGER) RETURNS TEXT
    LANGUAGE SQL IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT chr(65 + (x / 17576) % 26) || chr(65 + (x / 676) % 26)
        || chr(65 + (x / 26) % 26) || chr(65 + x % 26)
    FROM (SELECT ((id::BIGINT * 104729) % 456976)::INTEGER AS x) AS s
    $$;
