-- `occurred_at` is when the event row is written (just before commit), not when its
-- transaction began: the commit → publish latency is measured from it.
alter table events alter column occurred_at set default clock_timestamp();
