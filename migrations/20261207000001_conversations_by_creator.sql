-- The per-user quotas on new conversations count what a user created in the last hour.
create index conversations_by_creator on conversations (created_by, created_at);
