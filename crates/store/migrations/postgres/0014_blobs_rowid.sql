-- SQLite's bodies table changed layout (see the SQLite migration); PostgreSQL's heap tables
-- already append rows. Nothing to change.
SELECT 1;
