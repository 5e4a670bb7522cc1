//! The broker's routing table: the users connected here (their connections, and the
//! conversations they are members of) and, for every conversation with a local member, those
//! members and the latest `seq` this broker has seen.
//!
//! Both tables are split into shards, each behind its own mutex, so deliveries, joins and leaves
//! on different users and conversations do not queue behind one lock. Locks are never held
//! across an `.await`; when two are held at once it is always a user shard, then a conversation
//! shard. A delivery copies a conversation's members out before it locks their user shards.
//!
//! What interest costs: a conversation entry (its key, last seq and member set: a 56-byte slot,
//! ~85 bytes with the hash table's slack) the first time a local user is a member, then ~16
//! bytes in the conversation's member set and 16 in the user's list for each local membership.
//! No NATS subscription, channel or task per conversation.
//!
//! A conversation with many local members (a crowd: more than [`FEW`]) also keeps the flat
//! list of its members' connections, built on the first delivery after a change and shared
//! until the next: a delivery to 10,000 members then walks one array instead of looking up
//! 10,000 users (24 bytes per connection, only for crowds).

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::Membership;

use crate::outbound::{Frame, Outbound, Pushed};

/// Shards per table: enough that two cores rarely meet on one, few enough to cost nothing.
const SHARDS: usize = 64;

/// A table split into [`SHARDS`] mutex-guarded maps, by the key's random low bits (UUIDv7).
#[derive(Debug)]
struct Shards<K, V> {
    shards: Box<[Mutex<HashMap<K, V, RandomState>>]>,
}

impl<K: Eq + Hash + ShardKey, V> Shards<K, V> {
    fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect() }
    }

    fn lock(&self, key: &K) -> MutexGuard<'_, HashMap<K, V, RandomState>> {
        lock(&self.shards[key.shard()])
    }

    fn each(&self) -> impl Iterator<Item = MutexGuard<'_, HashMap<K, V, RandomState>>> {
        self.shards.iter().map(lock)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is complete before any call that could panic.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

trait ShardKey {
    fn shard(&self) -> usize;
}

impl ShardKey for UserId {
    fn shard(&self) -> usize {
        (self.as_uuid().as_u128() % SHARDS as u128) as usize
    }
}

impl ShardKey for ConversationId {
    fn shard(&self) -> usize {
        (self.as_uuid().as_u128() % SHARDS as u128) as usize
    }
}

/// One user connected (or connecting) to this broker.
#[derive(Debug, Default)]
pub struct UserEntry {
    pub connections: Vec<Arc<Outbound>>,
    /// Connections past authentication that have not had their `hello` yet.
    pub joining: usize,
    /// Whether the user's memberships are known (their first connection's snapshot is in).
    pub installed: bool,
    /// Whether presence was told of this user's arrival (and so will be of their departure).
    pub arrived: bool,
    /// The conversations the user is a member of, sorted (membership changes are rare).
    conversations: Vec<ConversationId>,
}

impl UserEntry {
    pub fn conversations(&self) -> &[ConversationId] {
        &self.conversations
    }

    pub fn is_member(&self, conversation: ConversationId) -> bool {
        self.conversations.binary_search(&conversation).is_ok()
    }
}

/// A conversation with at least one local member.
#[derive(Debug)]
struct ConversationEntry {
    members: MemberSet,
    /// The latest `seq` delivered here or known from a snapshot: the position second connections
    /// get in `hello`.
    last_seq: i64,
    /// All its members, everywhere, for presence; [`UNKNOWN_COUNT`] when learnt from an event
    /// that did not say.
    member_count: u32,
}

/// A member count not known here (treated as larger than any presence threshold).
const UNKNOWN_COUNT: u32 = u32::MAX;

/// The local members of one conversation: inline for one (a direct conversation whose other
/// member is elsewhere), a boxed slice for a few, a hash set for many. 24 bytes, so a
/// conversation entry is 40 and its slot in the table 56.
#[derive(Debug)]
enum MemberSet {
    One(UserId),
    /// Exactly sized: membership changes are rare, deliveries many.
    Few(Box<[UserId]>),
    /// Boxed so the common variants stay small (24 bytes).
    Many(Box<Crowd>),
}

/// A connection, and the user it belongs to.
pub type Recipient = (UserId, Arc<Outbound>);

/// The local members of a conversation with many of them.
#[derive(Debug, Default)]
struct Crowd {
    users: HashSet<UserId, RandomState>,
    /// Every connection of every member, once a delivery built it; dropped by any change.
    connections: Option<Arc<[Recipient]>>,
    /// Counts the changes, so a list built from an older state is not kept.
    version: u64,
}

impl Crowd {
    fn changed(&mut self) {
        self.connections = None;
        self.version += 1;
    }
}

/// Past this many local members a set replaces the slice (removal stays O(1)).
const FEW: usize = 32;

impl MemberSet {
    fn insert(&mut self, user: UserId) {
        match self {
            Self::One(one) if *one == user => {}
            Self::One(one) => *self = Self::Few(Box::new([*one, user])),
            Self::Few(few) if few.contains(&user) => {}
            Self::Few(few) if few.len() < FEW => {
                let mut members = std::mem::take(few).into_vec();
                members.push(user);
                *few = members.into_boxed_slice();
            }
            Self::Few(few) => {
                let mut users: HashSet<UserId, RandomState> = few.iter().copied().collect();
                users.insert(user);
                *self = Self::Many(Box::new(Crowd { users, ..Crowd::default() }));
            }
            Self::Many(crowd) => {
                if crowd.users.insert(user) {
                    crowd.changed();
                }
            }
        }
    }

    /// Removes `user`; returns whether no member is left.
    fn remove(&mut self, user: UserId) -> bool {
        match self {
            Self::One(one) => *one == user,
            Self::Few(few) => {
                let rest: Vec<UserId> = few.iter().copied().filter(|member| *member != user).collect();
                match rest.as_slice() {
                    [] => return true,
                    [one] => *self = Self::One(*one),
                    _ => *few = rest.into_boxed_slice(),
                }
                false
            }
            Self::Many(crowd) => {
                if crowd.users.remove(&user) {
                    crowd.changed();
                }
                crowd.users.is_empty()
            }
        }
    }

    fn copy_into(&self, out: &mut Vec<UserId>) {
        match self {
            Self::One(one) => out.push(*one),
            Self::Few(few) => out.extend_from_slice(few),
            Self::Many(crowd) => out.extend(crowd.users.iter().copied()),
        }
    }
}

/// What a membership event says about a conversation's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberCount {
    Is(u32),
    Delta(i32),
}

/// Why a delivery reached nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// No local member: dropped after one lookup.
    NoInterest,
    /// Handed to the local members' connections.
    Delivered,
}

/// What a delivery to a conversation's members did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushes {
    pub sent: u64,
    pub overflowed: usize,
}

impl Pushes {
    fn add(&mut self, (sent, overflowed): (u64, usize)) {
        self.sent += sent;
        self.overflowed += overflowed;
    }
}

/// Where a conversation's local connections are, as a delivery finds them.
enum Recipients {
    NoInterest,
    /// In the crowd's flat list.
    Listed(Arc<[Recipient]>),
    /// Members copied out (a few, or a crowd whose list must be built: its version).
    Members(Option<u64>),
}

/// A connection that asked for a user's presence (`presence.subscribe`), and its user.
pub type Watcher = (UserId, Arc<Outbound>);

#[derive(Debug)]
pub struct Index {
    users: Shards<UserId, UserEntry>,
    conversations: Shards<ConversationId, ConversationEntry>,
    /// Watched user → the connections that subscribed to their presence.
    watchers: Shards<UserId, Vec<Watcher>>,
}

impl Default for Index {
    fn default() -> Self {
        Self { users: Shards::new(), conversations: Shards::new(), watchers: Shards::new() }
    }
}

impl Index {
    /// Runs `f` on the user's entry (created if missing) under its shard lock.
    pub fn with_user<T>(&self, user: UserId, f: impl FnOnce(&mut UserEntry) -> T) -> T {
        f(self.users.lock(&user).entry(user).or_default())
    }

    /// Runs `f` on the user's entry, if the user is here.
    pub fn with_known_user<T>(&self, user: UserId, f: impl FnOnce(&mut UserEntry) -> T) -> Option<T> {
        self.users.lock(&user).get_mut(&user).map(f)
    }

    pub fn has_user(&self, user: UserId) -> bool {
        self.users.lock(&user).contains_key(&user)
    }

    pub fn has_conversation(&self, conversation: ConversationId) -> bool {
        self.conversations.lock(&conversation).contains_key(&conversation)
    }

    /// Takes the user out once their last connection has left (and no other is joining);
    /// returns their entry, whose conversations no longer list them, and their presence
    /// audience (see [`Self::audience`]) as it was.
    pub fn remove_user_if_idle(&self, user: UserId, auto_max_members: u32) -> Option<(UserEntry, Vec<ConversationId>)> {
        let mut users = self.users.lock(&user);
        let idle = users.get(&user).is_some_and(|entry| entry.connections.is_empty() && entry.joining == 0);
        if !idle {
            return None;
        }
        let entry = users.remove(&user)?;
        let audience = self.small(&entry.conversations, auto_max_members);
        for &conversation in &entry.conversations {
            self.remove_member(conversation, user);
        }
        Some((entry, audience))
    }

    /// The user's conversations with at most `max_members` members: whose members hear the
    /// user's presence without asking.
    #[cfg(test)]
    fn audience(&self, user: UserId, max_members: u32) -> Vec<ConversationId> {
        let conversations = self.with_known_user(user, |entry| entry.conversations.clone()).unwrap_or_default();
        self.small(&conversations, max_members)
    }

    /// The presence audience (see [`crate::recent::audience`]) among `conversations`: those
    /// with at most `max_members` members.
    fn small(&self, conversations: &[ConversationId], max_members: u32) -> Vec<ConversationId> {
        let small = conversations.iter().filter_map(|&conversation| {
            let conversations = self.conversations.lock(&conversation);
            let entry = conversations.get(&conversation).filter(|entry| entry.member_count <= max_members)?;
            Some((entry.last_seq, conversation))
        });
        crate::recent::audience(small)
    }

    /// A membership event changed the conversation's size by `delta`, or (`count`) said it.
    pub fn count_members(&self, conversation: ConversationId, change: MemberCount) {
        if let Some(entry) = self.conversations.lock(&conversation).get_mut(&conversation) {
            entry.member_count = match (entry.member_count, change) {
                (_, MemberCount::Is(count)) => count,
                (UNKNOWN_COUNT, MemberCount::Delta(_)) => UNKNOWN_COUNT,
                (known, MemberCount::Delta(delta)) => known.saturating_add_signed(delta).min(UNKNOWN_COUNT - 1),
            };
        }
    }

    /// Adds a presence subscription of `watcher` to `watched`.
    pub fn watch(&self, watched: UserId, watcher: Watcher) {
        let mut watchers = self.watchers.lock(&watched);
        let list = watchers.entry(watched).or_default();
        if !list.iter().any(|(_, connection)| Arc::ptr_eq(connection, &watcher.1)) {
            list.push(watcher);
        }
    }

    pub fn unwatch(&self, watched: UserId, connection: &Arc<Outbound>) {
        let mut watchers = self.watchers.lock(&watched);
        if let Some(list) = watchers.get_mut(&watched) {
            list.retain(|(_, watching)| !Arc::ptr_eq(watching, connection));
            if list.is_empty() {
                watchers.remove(&watched);
            }
        }
    }

    /// The connections subscribed to `watched`'s presence, copied into `out` (cleared first).
    pub fn watchers_of(&self, watched: UserId, out: &mut Vec<Watcher>) {
        out.clear();
        if let Some(list) = self.watchers.lock(&watched).get(&watched) {
            out.extend(list.iter().cloned());
        }
    }

    /// Makes a just-joined user's memberships known: `positions` (from the API's snapshot) for
    /// conversations new to this broker; entries that exist keep their own `last_seq`. Returns
    /// false (and changes nothing) when another connection of the user did it first.
    pub fn install(&self, user: UserId, memberships: &[Membership]) -> bool {
        let mut users = self.users.lock(&user);
        let Some(entry) = users.get_mut(&user) else { return false };
        if entry.installed {
            return false;
        }
        entry.installed = true;
        entry.conversations = memberships.iter().map(|membership| membership.conversation_id).collect();
        entry.conversations.sort_unstable();
        entry.conversations.dedup();
        for membership in memberships {
            let count = u32::try_from(membership.member_count).unwrap_or(UNKNOWN_COUNT - 1);
            self.add_member(membership.conversation_id, user, membership.last_seq, count);
        }
        true
    }

    /// `user` (if connected here) is now a member of `conversation`, or no longer is.
    pub fn set_membership(&self, user: UserId, conversation: ConversationId, member: bool, seq: i64) {
        let mut users = self.users.lock(&user);
        let Some(entry) = users.get_mut(&user).filter(|entry| entry.installed) else { return };
        match (entry.conversations.binary_search(&conversation), member) {
            (Err(at), true) => {
                entry.conversations.insert(at, conversation);
                self.add_member(conversation, user, seq, UNKNOWN_COUNT);
            }
            (Ok(at), false) => {
                entry.conversations.remove(at);
                self.remove_member(conversation, user);
            }
            _ => {}
        }
    }

    /// The conversation's latest `seq` here, if it has local members.
    pub fn last_seq(&self, conversation: ConversationId) -> Option<i64> {
        self.conversations.lock(&conversation).get(&conversation).map(|entry| entry.last_seq)
    }

    /// Records that `seq` of the conversation was delivered here by other means (a join's
    /// replay), so positions handed out later include it.
    pub fn note_seq(&self, conversation: ConversationId, seq: i64) {
        if let Some(entry) = self.conversations.lock(&conversation).get_mut(&conversation) {
            entry.last_seq = entry.last_seq.max(seq);
        }
    }

    /// `member_count` applies to a new entry, or replaces an unknown one.
    fn add_member(&self, conversation: ConversationId, user: UserId, last_seq: i64, member_count: u32) {
        let mut conversations = self.conversations.lock(&conversation);
        let entry = conversations.entry(conversation).or_insert_with(|| ConversationEntry {
            members: MemberSet::One(user),
            last_seq,
            member_count,
        });
        entry.members.insert(user);
        if entry.member_count == UNKNOWN_COUNT {
            entry.member_count = member_count;
        }
    }

    fn remove_member(&self, conversation: ConversationId, user: UserId) {
        let mut conversations = self.conversations.lock(&conversation);
        if conversations.get_mut(&conversation).is_some_and(|entry| entry.members.remove(user)) {
            conversations.remove(&conversation);
        }
    }

    /// Copies the conversation's local members into `members` (cleared first).
    pub fn members_for(&self, conversation: ConversationId, members: &mut Vec<UserId>) -> Delivery {
        members.clear();
        match self.conversations.lock(&conversation).get(&conversation) {
            Some(entry) => {
                entry.members.copy_into(members);
                Delivery::Delivered
            }
            None => Delivery::NoInterest,
        }
    }

    /// Pushes `frame` to every connection of every local member of `conversation` except
    /// `skip`'s, and records `seq` (`None` for signals); `None` when no member is here.
    /// `members` is scratch space.
    pub fn deliver(
        &self,
        conversation: ConversationId,
        seq: Option<i64>,
        skip: Option<UserId>,
        frame: &Frame,
        members: &mut Vec<UserId>,
    ) -> Option<Pushes> {
        let listed = match self.recipients(conversation, seq, members) {
            Recipients::NoInterest => return None,
            Recipients::Listed(listed) => listed,
            Recipients::Members(None) => {
                let mut pushes = Pushes::default();
                for &user in members.iter().filter(|user| Some(**user) != skip) {
                    pushes.add(self.push_to_user_counted(user, frame));
                }
                return Some(pushes);
            }
            Recipients::Members(Some(version)) => self.list_crowd(conversation, version, members),
        };
        let mut pushes = Pushes::default();
        for (_, connection) in listed.iter().filter(|(user, _)| Some(*user) != skip) {
            pushes.sent += 1;
            pushes.overflowed += usize::from(connection.push(frame.clone()) == Pushed::Overflowed);
        }
        Some(pushes)
    }

    /// The conversation's local members (copied into `members`), or a crowd's list of
    /// connections when it has one; records `seq`.
    fn recipients(&self, conversation: ConversationId, seq: Option<i64>, members: &mut Vec<UserId>) -> Recipients {
        members.clear();
        let mut conversations = self.conversations.lock(&conversation);
        let Some(entry) = conversations.get_mut(&conversation) else { return Recipients::NoInterest };
        // No event is dropped for being at or below `last_seq`: that may come from a snapshot the
        // router has not caught up with yet, and the members installed before it still need the
        // event (the stream holds each event once; clients drop what `hello` covered).
        if let Some(seq) = seq {
            entry.last_seq = entry.last_seq.max(seq);
        }
        if let MemberSet::Many(crowd) = &entry.members
            && let Some(listed) = &crowd.connections
        {
            return Recipients::Listed(listed.clone());
        }
        entry.members.copy_into(members);
        Recipients::Members(match &entry.members {
            MemberSet::Many(crowd) => Some(crowd.version),
            _ => None,
        })
    }

    /// Builds the list of a crowd's connections from `members` (copied at `version`); keeps it
    /// unless the crowd changed meanwhile. User shards are locked before the conversation's,
    /// never inside it.
    fn list_crowd(&self, conversation: ConversationId, version: u64, members: &[UserId]) -> Arc<[Recipient]> {
        let mut listed = Vec::with_capacity(members.len());
        for &user in members {
            if let Some(entry) = self.users.lock(&user).get(&user) {
                listed.extend(entry.connections.iter().map(|connection| (user, connection.clone())));
            }
        }
        let listed: Arc<[Recipient]> = listed.into();
        if let Some(entry) = self.conversations.lock(&conversation).get_mut(&conversation)
            && let MemberSet::Many(crowd) = &mut entry.members
            && crowd.version == version
        {
            crowd.connections = Some(listed.clone());
        }
        listed
    }

    /// A connection of `user` opened or closed: the lists of the crowds they are in are stale.
    pub fn connections_changed(&self, user: UserId) {
        let users = self.users.lock(&user);
        let Some(entry) = users.get(&user) else { return };
        for conversation in &entry.conversations {
            if let Some(ConversationEntry { members: MemberSet::Many(crowd), .. }) =
                self.conversations.lock(conversation).get_mut(conversation)
            {
                crowd.changed();
            }
        }
    }

    /// Pushes `frame` to every connection of `user`; returns how many overflowed.
    pub fn push_to_user(&self, user: UserId, frame: &Frame) -> usize {
        self.push_to_user_counted(user, frame).1
    }

    /// Like [`Self::push_to_user`]; returns (frames pushed, overflowed).
    pub fn push_to_user_counted(&self, user: UserId, frame: &Frame) -> (u64, usize) {
        let users = self.users.lock(&user);
        let Some(entry) = users.get(&user) else { return (0, 0) };
        (entry.connections.len() as u64, push_all(&entry.connections, frame))
    }

    /// Asks every connection of `user` to check the users it follows again.
    pub fn ask_presence_recheck(&self, user: UserId) {
        let users = self.users.lock(&user);
        for connection in users.get(&user).map(|entry| entry.connections.as_slice()).unwrap_or_default() {
            connection.ask_presence_recheck();
        }
    }

    /// Every open connection, at this moment.
    pub fn open_connections(&self) -> Vec<Arc<Outbound>> {
        self.users
            .each()
            .flat_map(|users| users.values().flat_map(|e| e.connections.clone()).collect::<Vec<_>>())
            .collect()
    }

    /// (users, conversations, memberships) for the gauges.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let (mut users, mut memberships) = (0, 0);
        for shard in self.users.each() {
            users += shard.len();
            memberships += shard.values().map(|entry| entry.conversations.len()).sum::<usize>();
        }
        let conversations = self.conversations.each().map(|shard| shard.len()).sum();
        (users, conversations, memberships)
    }

    pub fn clear(&self) {
        for mut shard in self.users.each() {
            shard.clear();
        }
        for mut shard in self.conversations.each() {
            shard.clear();
        }
    }
}

/// Pushes `frame` to each connection; returns how many overflowed (and are now closing).
pub fn push_all(connections: &[Arc<Outbound>], frame: &Frame) -> usize {
    connections.iter().filter(|connection| connection.push(frame.clone()) == Pushed::Overflowed).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn user() -> UserId {
        UserId::from_uuid(Uuid::now_v7())
    }

    fn conversation() -> ConversationId {
        ConversationId::from_uuid(Uuid::now_v7())
    }

    #[test]
    fn a_conversation_entry_stays_40_bytes() {
        assert_eq!(std::mem::size_of::<MemberSet>(), 24);
        assert_eq!(std::mem::size_of::<ConversationEntry>(), 40);
    }

    #[test]
    fn a_few_members_shrink_back_to_one_inline() {
        let (a, b, c) = (user(), user(), user());
        let mut set = MemberSet::One(a);
        set.insert(b);
        set.insert(c);
        assert!(!set.remove(a));
        assert!(!set.remove(b));
        assert!(matches!(set, MemberSet::One(one) if one == c));
        assert!(set.remove(c));
    }

    #[test]
    fn a_member_set_grows_from_inline_to_slice_to_set_and_empties() {
        let users: Vec<UserId> = (0..FEW + 5).map(|_| user()).collect();
        let mut set = MemberSet::One(users[0]);
        for &member in &users {
            set.insert(member);
            set.insert(member);
        }
        assert!(matches!(set, MemberSet::Many(_)));
        let mut copied = Vec::new();
        set.copy_into(&mut copied);
        copied.sort();
        let mut expected = users.clone();
        expected.sort();
        assert_eq!(copied, expected);
        let (last, rest) = users.split_last().expect("users");
        for &member in rest {
            assert!(!set.remove(member));
        }
        assert!(set.remove(*last));
    }

    #[test]
    fn a_crowd_delivers_from_its_list_and_a_new_connection_or_member_makes_a_new_one() {
        use crate::outbound::QueueBound;
        let index = Index::default();
        let group = conversation();
        let connect = |member: UserId| {
            let outbound = Arc::new(Outbound::new(QueueBound { frames: 100, bytes: 1 << 20 }));
            index.with_user(member, |entry| entry.connections.push(outbound.clone()));
            index.connections_changed(member);
            outbound
        };
        let members: Vec<UserId> = (0..=FEW).map(|_| user()).collect();
        let mut connections = Vec::new();
        for &member in &members {
            index.with_user(member, |entry| entry.joining = 1);
            assert!(index.install(member, &[Membership { conversation_id: group, last_seq: 1, member_count: 40 }]));
            connections.push(connect(member));
        }
        let frame = Frame { text: "event".into(), occurred_at_micros: 0 };
        let mut scratch = Vec::new();
        let deliver = |skip| index.deliver(group, Some(2), skip, &frame, &mut Vec::new()).expect("members here");
        assert_eq!(deliver(None).sent, FEW as u64 + 1, "the first delivery builds the list");
        assert_eq!(deliver(Some(members[0])).sent, FEW as u64, "the skipped member gets nothing");
        assert!(matches!(index.recipients(group, None, &mut scratch), Recipients::Listed(_)));

        let second = connect(members[1]);
        assert!(matches!(index.recipients(group, None, &mut scratch), Recipients::Members(Some(_))));
        assert_eq!(deliver(None).sent, FEW as u64 + 2, "a member's new connection is in the next list");
        assert_eq!(second.queued_frames(), 1);

        let newcomer = user();
        index.with_user(newcomer, |entry| entry.joining = 1);
        assert!(index.install(newcomer, &[]));
        let third = connect(newcomer);
        index.set_membership(newcomer, group, true, 3);
        assert_eq!(deliver(None).sent, FEW as u64 + 3, "a new member is in the next list");
        assert_eq!(third.queued_frames(), 1);
        index.set_membership(newcomer, group, false, 4);
        assert_eq!(deliver(None).sent, FEW as u64 + 2, "a member who left is not");
        assert_eq!(connections[2].queued_frames(), 5, "every delivery reached a member's connection once");
        assert_eq!(index.last_seq(group), Some(2));
    }

    #[test]
    fn memberships_keep_both_tables_in_step_and_the_last_member_drops_the_entry() {
        let index = Index::default();
        let (alice, bob, group) = (user(), user(), conversation());
        for member in [alice, bob] {
            index.with_user(member, |entry| entry.joining = 1);
            assert!(index.install(member, &[Membership { conversation_id: group, last_seq: 5, member_count: 2 }]));
        }
        assert!(!index.install(alice, &[]), "a second install changes nothing");
        let mut members = Vec::new();
        assert_eq!(index.members_for(group, &mut members), Delivery::Delivered);
        members.sort();
        let mut both = vec![alice, bob];
        both.sort();
        assert_eq!(members, both);

        index.set_membership(bob, group, false, 7);
        assert!(!index.with_known_user(bob, |entry| entry.is_member(group)).expect("bob"));
        index.members_for(group, &mut members);
        assert_eq!(members, [alice]);

        assert_eq!(index.audience(alice, 2), [group]);
        assert_eq!(index.audience(alice, 1), []);
        index.count_members(group, MemberCount::Delta(-1));
        assert_eq!(index.audience(alice, 1), [group]);

        index.with_user(alice, |entry| entry.joining = 0);
        let (entry, audience) = index.remove_user_if_idle(alice, 100).expect("alice was idle");
        assert_eq!((entry.conversations(), audience.as_slice()), ([group].as_slice(), [group].as_slice()));
        assert!(!index.has_conversation(group), "the last local member took the entry with them");
        assert_eq!(index.members_for(group, &mut members), Delivery::NoInterest);
    }
}
