-- The outbox relay publishes unpublished events oldest first. `position` is taken at insert, and
-- within one conversation inserts happen in seq order (the conversation row lock), so any
-- prefix of the unpublished events by position holds a seq-prefix of every conversation's:
-- the relay can cut a batch anywhere without publishing seq n+1 before n.
alter table events add column position bigint generated always as identity;
-- W3C traceparent of the request that wrote the event, so the publish continues its trace.
alter table events add column trace_context text;

drop index events_unpublished;
create index events_unpublished on events (position) where published_at is null;
