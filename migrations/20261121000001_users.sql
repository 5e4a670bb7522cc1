-- Users are known by the `sub` of their JWT, which Parley requires to be a UUID. A row is created
-- or refreshed each time a user is seen, and may be created earlier, when someone adds the user
-- to a conversation by id before they ever sign in (display_name is then still unknown).
create table users (
    id           uuid primary key,
    display_name text check (display_name is null or char_length(display_name) between 1 and 200),
    created_at   timestamptz not null default now(),
    -- When a request last carried this user's token; null until they sign in.
    last_seen_at timestamptz
);
