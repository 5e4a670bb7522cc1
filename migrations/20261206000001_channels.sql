-- Application channels (README "Channels"). Durable channels only: ephemeral publications are
-- never stored.

-- Each durable channel's position: the next publication takes last_offset + 1 under this
-- row's lock, which makes offsets gapless and commit order offset order, as for conversations.
create table channels (
    name        text primary key check (char_length(name) between 3 and 193),
    -- Names this history; a client's `since` from another epoch cannot be resumed.
    epoch       text not null,
    last_offset bigint not null default 0,
    created_at  timestamptz not null default now()
);

-- Publications, and the outbox of their delivery: published_at is null until JetStream
-- acknowledged the publication (the relay publishes them as it does events).
create table channel_publications (
    id            uuid primary key,   -- UUIDv7; also the NATS message id (deduplication)
    channel       text not null references channels (name),
    "offset"      bigint not null,
    data          jsonb not null,
    occurred_at   timestamptz not null default clock_timestamp(),
    published_at  timestamptz,
    position      bigint generated always as identity,
    trace_context text,
    constraint channel_publications_offset unique (channel, "offset")
);
create index channel_publications_unpublished on channel_publications (position) where published_at is null;

-- A retried publish request with the same Idempotency-Key answers what the first one did.
create table publish_idempotency_keys (
    key        text primary key,
    request    jsonb not null,
    response   jsonb not null,
    created_at timestamptz not null default now()
);
