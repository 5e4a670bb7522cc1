-- What users say about themselves (`PATCH /v1/me`): a display name they chose wins over the one
-- in their tokens (display_name_chosen_at is set), and an avatar URL.
alter table users
    add column display_name_chosen_at timestamptz,
    add column avatar_url text check (avatar_url is null or char_length(avatar_url) between 9 and 2048);
