-- Each conversation's number of members, kept by statement-level triggers (one update per
-- statement, however many members it adds or removes). Brokers use it to decide who hears a
-- member's presence automatically (conversations up to PARLEY_PRESENCE_AUTO_MAX_MEMBERS).
alter table conversations add column member_count integer not null default 0;

update conversations c
   set member_count = counted.n
  from (select conversation_id, count(*) as n from conversation_members group by conversation_id) counted
 where counted.conversation_id = c.id;

create function conversation_members_added() returns trigger language plpgsql as $$
begin
    update conversations c
       set member_count = c.member_count + added.n
      from (select conversation_id, count(*) as n from new_members group by conversation_id) added
     where added.conversation_id = c.id;
    return null;
end $$;

create function conversation_members_removed() returns trigger language plpgsql as $$
begin
    update conversations c
       set member_count = c.member_count - removed.n
      from (select conversation_id, count(*) as n from old_members group by conversation_id) removed
     where removed.conversation_id = c.id;
    return null;
end $$;

create trigger conversation_members_count_added
    after insert on conversation_members referencing new table as new_members
    for each statement execute function conversation_members_added();

create trigger conversation_members_count_removed
    after delete on conversation_members referencing old table as old_members
    for each statement execute function conversation_members_removed();

-- Brokers page through a user's conversations by id.
create index conversation_members_user_conversation on conversation_members (user_id, conversation_id);
drop index conversation_members_user;
