-- Mentions and the notification inbox (README "Notifications and push").

-- Who a message names: a JSON array of user ids, null when it names nobody.
alter table messages add column mentions jsonb;

-- One user's notifications. Each is created in the same transaction as the write that causes
-- it (a mention, a reply, a new direct conversation, being added to a group) or posted by a
-- backend; clearing one deletes it.
create table notifications (
    id         uuid primary key,   -- UUIDv7: newest first is id order, and the list's cursor
    user_id    uuid not null references users (id),
    kind       text not null check (kind in ('mention', 'reply', 'direct', 'added', 'call_missed', 'app')),
    priority   text not null check (priority in ('low', 'normal', 'high')),
    title      text not null check (char_length(title) between 1 and 200),
    body       text check (char_length(body) <= 1000),
    data       jsonb not null,
    created_at timestamptz not null default now(),
    read_at    timestamptz
);
create index notifications_by_user on notifications (user_id, id);
create index notifications_unread on notifications (user_id, id) where read_at is null;

-- The outbox of live notification frames: every change of a user's inbox (created, read,
-- cleared), published by the relay to the user's subject in position order, so that every
-- device of the user sees the same inbox. Deleted once published and a day old.
create table notification_changes (
    position        bigint generated always as identity primary key,
    user_id         uuid not null,
    change          text not null check (change in ('created', 'read', 'read_up_to', 'cleared', 'cleared_all')),
    -- The notification created, read or cleared; for read_up_to the newest one read.
    notification_id uuid,
    occurred_at     timestamptz not null default clock_timestamp(),
    published_at    timestamptz
);
create index notification_changes_unpublished on notification_changes (position) where published_at is null;
