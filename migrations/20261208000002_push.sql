-- Push to users' devices (README "Notifications"): their push targets, the conversations they
-- muted, and the durable work of the push dispatcher.

-- Until when the member does not want pushes for the conversation (null: not muted).
alter table conversation_members add column muted_until timestamptz;

create table push_targets (
    id         uuid primary key,
    user_id    uuid not null references users (id),
    kind       text not null check (kind in ('expo', 'webpush', 'webhook')),
    -- expo: the Expo push token; webpush: the subscription's endpoint; webhook: the device's
    -- opaque id, handed to the application's webhook.
    address    text not null check (char_length(address) between 1 and 2048),
    -- webpush only: the subscription's keys (base64url), for the payload encryption.
    p256dh     text,
    auth       text,
    created_at timestamptz not null default now(),
    constraint push_targets_once unique (user_id, kind, address)
);

-- Notifications the dispatcher has still to decide about: push now (the user has no live
-- connection, or it is high priority), later (still unread after the grace delay), or never
-- (read, muted, cleared). Written with the notification, only for users with a push target.
create table push_queue (
    notification_id uuid primary key references notifications (id) on delete cascade,
    due_at          timestamptz not null
);
create index push_queue_due on push_queue (due_at);

-- One push of one notification to one target, retried with backoff until sent or dead.
-- The id is the push's stable id: every retry carries it (webhook-id, Expo and Web Push data).
create table push_deliveries (
    id              uuid primary key,
    notification_id uuid not null references notifications (id) on delete cascade,
    target_id       uuid not null references push_targets (id) on delete cascade,
    state           text not null default 'pending' check (state in ('pending', 'sent', 'dead')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    updated_at      timestamptz not null default now(),
    constraint push_deliveries_once unique (notification_id, target_id)
);
create index push_deliveries_due on push_deliveries (next_attempt_at) where state = 'pending';
create index push_deliveries_target on push_deliveries (target_id);
