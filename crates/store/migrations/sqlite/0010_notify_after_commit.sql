-- PostgreSQL's change notices moved out of its writing transactions; an SQLite store has one
-- process and no notices. Nothing to change, the version stays in step.
SELECT 1;
