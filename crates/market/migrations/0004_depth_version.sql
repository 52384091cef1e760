-- The version of an instrument's order book, raised by every replacement of
-- the book. The cache keeps the newest book it is given (a write-through
-- and a snapshot of every book may reach it in either order).
ALTER TABLE instruments ADD COLUMN depth_version BIGINT NOT NULL DEFAULT 0;
