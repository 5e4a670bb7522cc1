//! One connection's outbound queue: bounded, holding no allocation while empty (an idle
//! connection costs a few dozen bytes here, not a channel's pre-allocated block), shared by the
//! hub (which pushes) and the connection task (which writes).
//!
//! A push over the bound does not wait and does not drop silently: it closes the connection
//! with the slow-consumer code, so a client that stops reading never slows anyone else.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::CloseCode;

/// A frame waiting to be written, with its event's `occurred_at` (µs since the epoch) for the
/// delivery-latency metric; 0 for frames that are not events. Cloning shares the text.
#[derive(Clone, Debug)]
pub struct Frame {
    pub text: Utf8Bytes,
    pub occurred_at_micros: i64,
}

#[derive(Clone, Copy, Debug)]
pub struct QueueBound {
    pub frames: usize,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct Outbound {
    bound: QueueBound,
    state: Mutex<State>,
    /// A member left one of the user's conversations: the users this connection follows must
    /// be checked again (see `Hub::presence_recheck`).
    presence_recheck: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    frames: FrameQueue,
    close: Option<CloseCode>,
    waker: Option<Waker>,
}

/// Frames in order, the first one inline: a connection that is sent one frame at a time (the
/// usual case) costs no allocation per frame, and no allocation made by the router's thread is
/// freed by the connection's.
#[derive(Debug, Default)]
pub struct FrameQueue {
    first: Option<Frame>,
    rest: VecDeque<Frame>,
    /// The frames' text bytes in all.
    bytes: usize,
}

impl FrameQueue {
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn push_back(&mut self, frame: Frame) {
        self.bytes += frame.text.len();
        match self.first {
            None => self.first = Some(frame),
            Some(_) => {
                if self.rest.capacity() == 0 {
                    // A connection that falls behind usually falls behind by many frames.
                    self.rest.reserve_exact(15);
                }
                self.rest.push_back(frame);
            }
        }
    }
}

impl IntoIterator for FrameQueue {
    type Item = Frame;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Frame>, std::collections::vec_deque::IntoIter<Frame>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The bound was hit: the connection is now closing with the slow-consumer code.
    Overflowed,
    /// The connection was already closing; the frame was discarded.
    Closing,
}

impl Outbound {
    pub fn new(bound: QueueBound) -> Self {
        Self { bound, state: Mutex::default(), presence_recheck: AtomicBool::new(false) }
    }

    /// Frames queued now.
    #[cfg(test)]
    pub fn queued_frames(&self) -> usize {
        self.lock().frames.len()
    }

    /// Asks the connection to check the users it follows again, and wakes it.
    pub fn ask_presence_recheck(&self) {
        self.presence_recheck.store(true, Ordering::Release);
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether a recheck was asked for since the last call.
    pub fn take_presence_recheck(&self) -> bool {
        self.presence_recheck.swap(false, Ordering::AcqRel)
    }

    pub fn push(&self, frame: Frame) -> Pushed {
        let (pushed, waker) = {
            let mut state = self.lock();
            if state.close.is_some() {
                return Pushed::Closing;
            }
            let pushed = if state.frames.len() >= self.bound.frames
                || state.frames.bytes + frame.text.len() > self.bound.bytes
            {
                state.close_with(CloseCode::SlowConsumer);
                Pushed::Overflowed
            } else {
                state.frames.push_back(frame);
                Pushed::Queued
            };
            (pushed, state.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        pushed
    }

    /// Asks the connection to close with `code` (the first code asked for wins); queued frames
    /// are dropped.
    pub fn close(&self, code: CloseCode) {
        let waker = {
            let mut state = self.lock();
            state.close_with(code);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The close code asked for, if any; else, when `take`, every queued frame (the queue is
    /// left empty, holding no memory). Registers `cx` to be woken by the next push or close. One
    /// lock per wake-up, however many frames.
    pub fn poll_take(&self, cx: &mut Context<'_>, take: bool) -> Result<FrameQueue, CloseCode> {
        let mut state = self.lock();
        if let Some(code) = state.close {
            return Err(code);
        }
        if !state.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        if !take {
            return Ok(FrameQueue::default());
        }
        Ok(std::mem::take(&mut state.frames))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every update is one step).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn close_with(&mut self, code: CloseCode) {
        if self.close.is_none() {
            self.close = Some(code);
            self.frames = FrameQueue::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Context;

    use futures_util::task::noop_waker_ref;

    use super::*;

    fn frame(text: &str) -> Frame {
        Frame { text: text.to_owned().into(), occurred_at_micros: 0 }
    }

    fn take(outbound: &Outbound) -> Result<Vec<String>, CloseCode> {
        let mut cx = Context::from_waker(noop_waker_ref());
        let frames = outbound.poll_take(&mut cx, true)?;
        Ok(frames.into_iter().map(|frame| frame.text.as_str().to_owned()).collect())
    }

    #[test]
    fn frames_come_out_in_order_and_the_bound_closes_with_slow_consumer() {
        let outbound = Outbound::new(QueueBound { frames: 2, bytes: 1024 });
        assert_eq!(outbound.push(frame("a")), Pushed::Queued);
        assert_eq!(outbound.push(frame("b")), Pushed::Queued);
        assert_eq!(take(&outbound), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(take(&outbound), Ok(vec![]), "taking empties the queue");
        assert_eq!(outbound.push(frame("c")), Pushed::Queued);
        assert_eq!(outbound.push(frame("d")), Pushed::Queued);
        assert_eq!(outbound.push(frame("e")), Pushed::Overflowed);
        assert_eq!(outbound.push(frame("f")), Pushed::Closing);
        assert_eq!(take(&outbound), Err(CloseCode::SlowConsumer), "queued frames are dropped on close");
    }

    #[test]
    fn the_byte_bound_counts_too_and_the_first_close_code_wins() {
        let outbound = Outbound::new(QueueBound { frames: 100, bytes: 4 });
        assert_eq!(outbound.push(frame("abc")), Pushed::Queued);
        assert_eq!(outbound.push(frame("de")), Pushed::Overflowed);
        outbound.close(CloseCode::Shutdown);
        assert_eq!(take(&outbound), Err(CloseCode::SlowConsumer));
    }
}
