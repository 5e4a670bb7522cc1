//! Group commit: writes into one key (a conversation) that arrive while a transaction for it
//! is in flight queue up, and the next transaction commits all of them at once. Writers of one
//! conversation serialise on its row lock for a whole commit (an fsync); one commit for many
//! writes is what lifts a busy conversation past one commit per message.
//!
//! Nothing waits for company: the first write into an idle key starts its worker at once, so a
//! quiet conversation pays a task hand-off, not a delay. Each key has at most one worker,
//! which takes up to `max_batch` queued writes per transaction in arrival order and ends when
//! its queue is empty.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// What commits one batch of writes into one key.
pub trait Committer: Send + Sync + 'static {
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    type Write: Send + 'static;
    type Outcome: Send + 'static;

    /// Commits `writes` (in arrival order); returns one outcome per write, in the same order.
    fn commit(&self, key: &Self::Key, writes: Vec<Self::Write>) -> impl Future<Output = Vec<Self::Outcome>> + Send;
}

type Queue<C> = VecDeque<(<C as Committer>::Write, oneshot::Sender<<C as Committer>::Outcome>)>;

pub struct GroupCommit<C: Committer> {
    committer: C,
    max_batch: usize,
    /// A key is present exactly while its worker runs.
    queues: Mutex<HashMap<C::Key, Queue<C>>>,
}

impl<C: Committer> std::fmt::Debug for GroupCommit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("max_batch", &self.max_batch).finish_non_exhaustive()
    }
}

/// The worker of a write ended without answering it (it panicked; the panic is logged).
#[derive(Debug, thiserror::Error)]
#[error("the write's batch was abandoned")]
pub struct Abandoned;

impl<C: Committer> GroupCommit<C> {
    pub fn new(committer: C, max_batch: usize) -> Arc<Self> {
        Arc::new(Self { committer, max_batch: max_batch.max(1), queues: Mutex::default() })
    }

    /// Queues `write` for `key` and waits for its outcome. The write is committed even if the
    /// caller stops waiting (a client that hung up): like a request whose commit was on its way.
    pub async fn submit(self: &Arc<Self>, key: C::Key, write: C::Write) -> Result<C::Outcome, Abandoned> {
        let (answer, outcome) = oneshot::channel();
        let start_worker = match self.lock().entry(key.clone()) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push_back((write, answer));
                false
            }
            Entry::Vacant(vacant) => {
                vacant.insert(VecDeque::from([(write, answer)]));
                true
            }
        };
        if start_worker {
            tokio::spawn(self.clone().work(key));
        }
        outcome.await.map_err(|_| Abandoned)
    }

    async fn work(self: Arc<Self>, key: C::Key) {
        // Removes the key if this worker unwinds, so the next write starts a new one; the
        // writes still queued are dropped and their callers told.
        let mut guard = WorkerGuard { group: &self, key: &key, armed: true };
        loop {
            let batch: Vec<_> = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(&key) else { break };
                if queue.is_empty() {
                    queues.remove(&key);
                    guard.armed = false;
                    break;
                }
                let take = queue.len().min(self.max_batch);
                queue.drain(..take).collect()
            };
            let (writes, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = self.committer.commit(&key, writes).await;
            debug_assert_eq!(outcomes.len(), answers.len(), "one outcome per write");
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                // The caller may have stopped waiting; the write stands either way.
                let _ = answer.send(outcome);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<C::Key, Queue<C>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys with a running worker (for tests).
    #[cfg(test)]
    fn busy_keys(&self) -> usize {
        self.lock().len()
    }
}

struct WorkerGuard<'a, C: Committer> {
    group: &'a GroupCommit<C>,
    key: &'a C::Key,
    armed: bool,
}

impl<C: Committer> Drop for WorkerGuard<'_, C> {
    fn drop(&mut self) {
        if self.armed {
            self.group.lock().remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// Records each batch; outcomes are the writes doubled. Panics on a write of 13 when told.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<(u8, Vec<u32>)>>,
        panic_on_13: AtomicBool,
    }

    impl Committer for Arc<Recorder> {
        type Key = u8;
        type Write = u32;
        type Outcome = u32;

        async fn commit(&self, key: &u8, writes: Vec<u32>) -> Vec<u32> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(!(self.panic_on_13.load(Ordering::Relaxed) && writes.contains(&13)), "write 13");
            self.batches.lock().expect("batches").push((*key, writes.clone()));
            writes.into_iter().map(|write| write * 2).collect()
        }
    }

    #[tokio::test]
    async fn writes_that_queue_behind_a_commit_share_the_next_one_and_each_gets_its_own_outcome() {
        let recorder = Arc::new(Recorder::default());
        let group = GroupCommit::new(recorder.clone(), 16);
        let mut submitted = tokio::task::JoinSet::new();
        for write in 0..40u32 {
            let group = group.clone();
            submitted
                .spawn(async move { (write, group.submit(u8::from(write % 2 == 0), write).await.expect("answered")) });
        }
        while let Some(answered) = submitted.join_next().await {
            let (write, outcome) = answered.expect("task");
            assert_eq!(outcome, write * 2);
        }
        let batches = recorder.batches.lock().expect("batches").clone();
        assert!(batches.len() < 40, "writes were committed together: {batches:?}");
        assert!(batches.iter().all(|(_, writes)| writes.len() <= 16), "at most max_batch per commit: {batches:?}");
        for key in [0, 1] {
            let mut writes: Vec<u32> =
                batches.iter().filter(|batch| batch.0 == key).flat_map(|batch| batch.1.clone()).collect();
            assert!(writes.iter().all(|write| u8::from(write % 2 == 0) == key), "a batch holds one key's writes");
            writes.sort_unstable();
            assert_eq!(writes.len(), 20, "every write committed once");
            writes.dedup();
            assert_eq!(writes.len(), 20, "every write committed once");
        }
        assert_eq!(group.busy_keys(), 0, "idle keys keep no worker");
    }

    #[tokio::test]
    async fn a_worker_that_panics_abandons_its_writes_and_the_key_takes_new_ones() {
        let recorder = Arc::new(Recorder::default());
        recorder.panic_on_13.store(true, Ordering::Relaxed);
        let group = GroupCommit::new(recorder.clone(), 16);
        assert!(group.submit(7, 13).await.is_err());
        assert_eq!(group.busy_keys(), 0);
        recorder.panic_on_13.store(false, Ordering::Relaxed);
        assert_eq!(group.submit(7, 14).await.expect("answered"), 28);
    }
}
