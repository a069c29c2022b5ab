-- The console's and the API's router search matches any part of a serial number or a name,
-- ignoring case. `ILIKE '%…%'` over both columns read and case-folded every router (0.1 s a
-- query at 100,000 routers); one stored lower-case column is scanned several times faster, and a
-- trigram index on it serves searches of three characters or more without a scan. pg_trgm
-- ships with PostgreSQL and is a trusted extension (PostgreSQL 13 and later): the owner of the
-- database may create it without being a superuser. The newline keeps a search from matching
-- across the end of the serial and the start of the name.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE devices
    ADD COLUMN search_text TEXT GENERATED ALWAYS AS (lower(serial || E'\n' || name)) STORED;
CREATE INDEX devices_search_trigrams ON devices USING gin (search_text gin_trgm_ops);
