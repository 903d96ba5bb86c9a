-- SQLite's V4 rebuilt the requests table to reword its outcome check; the
-- PostgreSQL table has had the final rule since V2. Kept so that both
-- backends carry the same version numbers.
SELECT 1;
