-- Conversations, their members, messages, reactions, and the event log that is both the
-- transactional outbox (published_at) and the catch-up history clients replay by seq.

create table conversations (
    id               uuid primary key,
    kind             text not null check (kind in ('direct', 'group')),
    title            text check (title is null or char_length(title) between 1 and 200),
    -- Direct conversations only: '<lower user id>:<higher user id>' plus the app context, so
    -- a pair (in one context) can only ever have one conversation, however it is created.
    direct_key       text unique,
    context_kind     text,
    context_id       text,
    context_title    text,
    created_by       uuid not null references users (id),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    -- The seq of the latest event; the next event takes last_seq + 1 under this row's lock,
    -- which makes seq gapless and ordered per conversation.
    last_seq         bigint not null default 0,
    last_activity_at timestamptz not null default now(),
    constraint conversations_direct_key check ((kind = 'direct') = (direct_key is not null))
);

create table conversation_members (
    conversation_id  uuid not null references conversations (id),
    user_id          uuid not null references users (id),
    role             text not null check (role in ('owner', 'member')),
    joined_at        timestamptz not null default now(),
    -- Events before this seq happened before the user joined; they are not theirs to read.
    visible_from_seq bigint not null,
    delivered_seq    bigint not null default 0,
    read_seq         bigint not null default 0,
    primary key (conversation_id, user_id)
);
create index conversation_members_user on conversation_members (user_id);

create table messages (
    id                uuid primary key,
    conversation_id   uuid not null references conversations (id),
    seq               bigint not null,
    author_id         uuid not null references users (id),
    client_message_id text check (char_length(client_message_id) between 1 and 100),
    -- Null once deleted: the text is gone, the tombstone keeps its seq.
    body              text,
    reply_to          uuid references messages (id),
    attachment        jsonb,
    created_at        timestamptz not null default now(),
    edited_at         timestamptz,
    deleted_at        timestamptz,
    -- 'simple' (no stemming) works the same for every language.
    search            tsvector generated always as (to_tsvector('simple', coalesce(body, ''))) stored,
    constraint messages_conversation_seq unique (conversation_id, seq),
    constraint messages_deleted_have_no_content check (deleted_at is null or (body is null and attachment is null))
);
create index messages_search on messages using gin (search);

create table reactions (
    message_id uuid not null references messages (id),
    emoji      text not null,
    user_id    uuid not null references users (id),
    created_at timestamptz not null default now(),
    primary key (message_id, emoji, user_id)
);

create table events (
    id              uuid primary key,   -- UUIDv7; also the NATS message id (deduplication)
    conversation_id uuid not null references conversations (id),
    seq             bigint not null,
    type            text not null,
    actor_id        uuid not null,
    occurred_at     timestamptz not null default now(),
    data            jsonb not null,
    published_at    timestamptz,        -- null until the outbox relay has published it
    constraint events_conversation_seq unique (conversation_id, seq)
);
create index events_unpublished on events (conversation_id, seq) where published_at is null;

-- A retried POST with the same Idempotency-Key returns the message the first one created.
create table idempotency_keys (
    user_id    uuid not null,
    key        text not null,
    request    jsonb not null,
    message_id uuid not null,
    created_at timestamptz not null default now(),
    primary key (user_id, key)
);
