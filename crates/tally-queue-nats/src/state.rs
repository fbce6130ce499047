//! What one process holds of one partition (one consumer of the command stream) in memory: the messages
//! fetched from JetStream and not yet acked, per partition key in stream order, and which of them are
//! handed out. A key with a message handed out gives out nothing more until it is settled; a nacked
//! message goes back to the head of its key's line and holds the line until it is due.

use std::collections::{BTreeMap, HashMap, VecDeque};

use async_nats::Subject;
use bytes::Bytes;
use tally_core::model::Delivery;
use tokio::time::Instant;
use uuid::Uuid;

/// A message fetched from JetStream and not acked yet: buffered, handed out, or waiting after a nack.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Its JetStream ack subject.
    pub reply: Subject,
    pub message_id: Uuid,
    pub key: String,
    pub payload: Bytes,
    pub redeliveries: u32,
    /// Not to be handed out before this (set by a nack).
    pub due: Option<Instant>,
    pub out: bool,
    /// Acked here; kept until the broker confirmed the ack ([`Lines::forget`]).
    pub settled: bool,
    /// When JetStream's ack timer of this message last started (its delivery or our last progress).
    pub touched: Instant,
}

#[derive(Debug, Default)]
struct Line {
    /// Stream sequences waiting to be handed out, in order.
    waiting: VecDeque<u64>,
    /// How many of the key's messages are handed out.
    out: usize,
}

/// The delivery state of one partition in this process.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    held: BTreeMap<u64, Held>,
    lines: HashMap<String, Line>,
    buffered: usize,
}

/// One message handed out by [`Lines::take`].
pub(crate) struct Taken {
    pub seq: u64,
    pub delivery: Delivery,
}

impl Lines {
    /// Adds a fetched message. False when it is held already (JetStream delivered it again because an
    /// ack timer ran out): the copy in memory stays as it is.
    pub fn push(&mut self, seq: u64, held: Held) -> bool {
        if self.held.contains_key(&seq) {
            return false;
        }
        let line = self.lines.entry(held.key.clone()).or_default();
        insert_sorted(&mut line.waiting, seq);
        self.held.insert(seq, held);
        self.buffered += 1;
        true
    }

    /// The head of every key with nothing handed out, if it is due: `(stream sequence, key)`. Also
    /// when the earliest held-back head becomes due.
    pub fn heads(&self, now: Instant) -> (Vec<(u64, String)>, Option<Instant>) {
        let mut heads = Vec::new();
        let mut next_due: Option<Instant> = None;
        for (key, line) in &self.lines {
            if line.out > 0 {
                continue;
            }
            let Some(seq) = line.waiting.front() else {
                continue;
            };
            match self.held.get(seq).and_then(|h| h.due) {
                Some(due) if due > now => next_due = Some(next_due.map_or(due, |d| d.min(due))),
                _ => heads.push((*seq, key.clone())),
            }
        }
        (heads, next_due)
    }

    /// Hands out the head of `key` (one of [`Lines::heads`], or the next of a key handed out from in
    /// the same receive) and returns it with the key's next head if that one is due too.
    pub fn take_head(&mut self, key: &str, now: Instant, tag: u64) -> Option<(Taken, Option<u64>)> {
        let line = self.lines.get_mut(key)?;
        let seq = *line.waiting.front()?;
        let h = self.held.get_mut(&seq)?;
        if h.due.is_some_and(|due| due > now) {
            return None;
        }
        line.waiting.pop_front();
        h.due = None;
        h.out = true;
        line.out += 1;
        self.buffered -= 1;
        let taken = Taken {
            seq,
            delivery: Delivery {
                tag,
                message_id: h.message_id,
                partition_key: h.key.clone(),
                payload: h.payload.to_vec(),
                redeliveries: h.redeliveries,
            },
        };
        let next = line.waiting.front().copied().filter(|s| {
            self.held
                .get(s)
                .is_none_or(|n| n.due.is_none_or(|d| d <= now))
        });
        Some((taken, next))
    }

    pub fn get(&self, seq: u64) -> Option<&Held> {
        self.held.get(&seq)
    }

    /// A handed-out message was acked (or dead-lettered) here: its key may move on at once. It stays
    /// held (so a partition is not given up, nor a redelivery taken for new) until [`Lines::forget`].
    pub fn acked(&mut self, seq: u64) {
        let Some(h) = self.held.get_mut(&seq) else {
            return;
        };
        if !h.out {
            return;
        }
        h.out = false;
        h.settled = true;
        if let Some(line) = self.lines.get_mut(&h.key) {
            line.out = line.out.saturating_sub(1);
            if line.out == 0 && line.waiting.is_empty() {
                self.lines.remove(&h.key);
            }
        }
    }

    /// The broker confirmed that an acked message is gone.
    pub fn forget(&mut self, seq: u64) {
        if self.held.get(&seq).is_some_and(|h| h.settled) {
            self.held.remove(&seq);
        }
    }

    /// A handed-out message was nacked: back to the head of its key's line (ahead of every later message
    /// of the key), counted as delivered once more, not due before `due`.
    pub fn nacked(&mut self, seq: u64, due: Instant) {
        let Some(h) = self.held.get_mut(&seq) else {
            return;
        };
        if !h.out {
            return;
        }
        h.out = false;
        h.redeliveries = h.redeliveries.saturating_add(1);
        h.due = Some(due);
        let line = self.lines.entry(h.key.clone()).or_default();
        line.out = line.out.saturating_sub(1);
        insert_sorted(&mut line.waiting, seq);
        self.buffered += 1;
    }

    /// Messages held and not handed out.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Messages held: buffered, handed out or waiting after a nack.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when some message's ack timer started before `before`.
    pub fn touched_before(&self, before: Instant) -> bool {
        self.held.values().any(|h| h.touched < before)
    }

    /// Every held message's ack subject in stream order, marking them all touched at `now`: touching all
    /// of them at once keeps JetStream's ack deadlines in stream order, so that if this process loses
    /// them they are redelivered in order.
    pub fn touch_all(&mut self, now: Instant) -> Vec<Subject> {
        self.held
            .values_mut()
            .map(|h| {
                h.touched = now;
                h.reply.clone()
            })
            .collect()
    }

    /// Forgets everything (the messages stay unacked on the broker and are redelivered).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

fn insert_sorted(line: &mut VecDeque<u64>, seq: u64) {
    if line.back().is_none_or(|last| *last < seq) {
        line.push_back(seq);
    } else {
        let at = line.iter().position(|s| *s > seq).unwrap_or(line.len());
        line.insert(at, seq);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn held(key: &str, now: Instant) -> Held {
        Held {
            reply: Subject::from_static("$JS.ACK.s.c.1.1.1.0.0"),
            message_id: Uuid::now_v7(),
            key: key.to_owned(),
            payload: Bytes::from_static(b"x"),
            redeliveries: 0,
            due: None,
            out: false,
            settled: false,
            touched: now,
        }
    }

    /// What one receive of `max` would hand out: the lowest sequences first, across keys.
    fn take(lines: &mut Lines, now: Instant, max: usize) -> Vec<(u64, String)> {
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, String)>> = lines
            .heads(now)
            .0
            .into_iter()
            .map(std::cmp::Reverse)
            .collect();
        let mut out = Vec::new();
        while out.len() < max
            && let Some(std::cmp::Reverse((_, key))) = heap.pop()
        {
            if let Some((taken, next)) = lines.take_head(&key, now, 1) {
                out.push((taken.seq, taken.delivery.partition_key));
                if let Some(n) = next {
                    heap.push(std::cmp::Reverse((n, key)));
                }
            }
        }
        out
    }

    #[test]
    fn a_key_waits_while_one_of_its_messages_is_out() {
        let now = Instant::now();
        let mut l = Lines::default();
        for (seq, key) in [(1, "a"), (2, "b"), (3, "a"), (4, "b")] {
            assert!(l.push(seq, held(key, now)));
        }
        let mut first = take(&mut l, now, 1);
        first.extend(take(&mut l, now, 1));
        first.sort();
        assert_eq!(first, [(1, "a".into()), (2, "b".into())]);
        assert!(take(&mut l, now, 10).is_empty());
        l.acked(1);
        assert_eq!(take(&mut l, now, 10), [(3, "a".into())]);
        assert_eq!(l.buffered(), 1);
    }

    #[test]
    fn one_take_may_hand_out_a_whole_line_in_order() {
        let now = Instant::now();
        let mut l = Lines::default();
        for seq in [5, 7, 9] {
            l.push(seq, held("k", now));
        }
        // A redelivery with a lower sequence goes ahead of them.
        l.push(2, held("k", now));
        assert!(!l.push(7, held("k", now)), "held already");
        let got: Vec<u64> = take(&mut l, now, 10).into_iter().map(|t| t.0).collect();
        assert_eq!(got, [2, 5, 7, 9]);
    }

    #[test]
    fn a_nacked_message_holds_its_line_until_due_and_comes_back_first() {
        let now = Instant::now();
        let mut l = Lines::default();
        for seq in [1, 2, 3] {
            l.push(seq, held("p", now));
        }
        assert_eq!(take(&mut l, now, 2).len(), 2);
        // Both out are handed back, the later one first.
        l.nacked(2, now + Duration::from_secs(5));
        l.nacked(1, now + Duration::from_secs(10));
        let (heads, due) = l.heads(now);
        assert!(heads.is_empty());
        assert_eq!(due, Some(now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(11);
        let got = take(&mut l, later, 10);
        assert_eq!(
            got.iter().map(|t| t.0).collect::<Vec<_>>(),
            [1, 2, 3],
            "in order once due"
        );
        assert_eq!(l.get(1).unwrap().redeliveries, 1);
        assert_eq!(l.get(3).unwrap().redeliveries, 0);
    }

    #[test]
    fn keys_interleave_in_stream_order() {
        let now = Instant::now();
        let mut l = Lines::default();
        for (seq, key) in [(1, "ref"), (2, "s1"), (3, "ref"), (4, "s2"), (5, "s1")] {
            l.push(seq, held(key, now));
        }
        let got: Vec<u64> = take(&mut l, now, 4).into_iter().map(|t| t.0).collect();
        assert_eq!(got, [1, 2, 3, 4]);
    }

    #[test]
    fn acking_everything_empties_it() {
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(1, held("a", now));
        l.push(2, held("a", now));
        take(&mut l, now, 10);
        l.acked(1);
        l.acked(2);
        assert!(!l.is_empty(), "held until the broker confirmed");
        assert!(l.heads(now).0.is_empty());
        assert!(
            !l.push(2, held("a", now)),
            "a redelivery of an acked message is not new"
        );
        l.forget(1);
        l.forget(2);
        assert!(l.is_empty());
        assert_eq!(l.buffered(), 0);
        assert!(l.lines.is_empty());
    }

    #[test]
    fn touching_marks_everything() {
        let now = Instant::now();
        let mut l = Lines::default();
        l.push(3, held("a", now));
        l.push(1, held("b", now));
        let later = now + Duration::from_secs(1);
        assert!(l.touched_before(later));
        assert_eq!(l.touch_all(later).len(), 2);
        assert!(!l.touched_before(later));
    }
}
