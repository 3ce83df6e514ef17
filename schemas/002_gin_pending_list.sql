-- Schema version 2: a smaller pending list for the attributes index.
-- A GIN index with fastupdate (the default) queues new entries in a pending list and merges
-- them into the index when the list passes gin_pending_list_limit (4 MB by default), in the
-- statement that happens to cross it: under a steady stream that statement took 200-300 ms
-- instead of 20-100 ms, and set the tail of the produce-to-result latency (make bench).
-- 512 kB merges about eight times as often, each merge an eighth of the work.
ALTER INDEX customer_metadata_attributes_idx SET (gin_pending_list_limit = 512);
