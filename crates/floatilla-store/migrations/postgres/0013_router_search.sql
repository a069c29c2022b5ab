-- The console's and the API's router search matches any part of a serial number or a name
-- (`ILIKE '%…%'`), which no B-tree index serves: at 100,000 routers every search read them all.
-- Trigram indexes serve such patterns. pg_trgm ships with PostgreSQL and is a trusted extension
-- (PostgreSQL 13 and later): the owner of the database may create it without being a superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX devices_serial_trigrams ON devices USING gin (serial gin_trgm_ops);
CREATE INDEX devices_name_trigrams ON devices USING gin (name gin_trgm_ops);
