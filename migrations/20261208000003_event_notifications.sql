-- The notifications a message's write created ride on its event: the relay publishes each as
-- a `notification` frame with the event, so a mention costs no `notification_changes` row of
-- its own (README "Notifications and push"). Ids of notifications that were not created (a
-- mentioned user who left meanwhile) are simply not found. Null when the event announces none.
alter table events add column notifications uuid[];
