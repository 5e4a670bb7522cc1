-- The relay deletes published events past their retention, oldest first.
create index events_published_at on events (published_at) where published_at is not null;
