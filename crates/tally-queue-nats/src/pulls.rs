//! The pull requests one partition's fetch task has sent in one epoch, as far as it knows them: how
//! many messages each may still deliver, which one is live and which lapsed. Bookkeeping only; the
//! fetch task in `queue.rs` sends the requests and reads what comes back.
//!
//! A request is *live* until it is filled, closed by a status (408 at its expiry), or lapses: a fixed
//! time after it was sent (its expiry and a margin) with no status, because nats-server 2.9.10 can
//! drop an expired request without sending one. What a request may still deliver counts towards the
//! watermarks while it is live, and after a status closed it (the status says how many it delivered,
//! some of which may still be on their way). A lapsed request's rest counts only towards the
//! buffer's cap, until it is forgotten.
//!
//! Statuses and heartbeats come on the request's own reply subject, so they name their request;
//! deliveries carry their stream subject and do not. A delivery counts against the latest request
//! that still expects one (the live request while there is one): if it was an earlier request's, the
//! latest one's rest is undercounted by as much as the earlier one's is overcounted, so the total
//! that bounds the buffer stays exact.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Request {
    batch: usize,
    received: usize,
    /// How many the server delivered in all, once a status closed it: its batch less the pending
    /// count the status reports.
    delivered: Option<usize>,
    sent_at: Instant,
    /// Anything came for it: a delivery, a heartbeat or a status.
    answered: bool,
    lapsed: bool,
}

impl Request {
    /// Deliveries that may still come.
    fn expected(&self) -> usize {
        self.delivered
            .unwrap_or(self.batch)
            .saturating_sub(self.received)
    }

    fn live(&self) -> bool {
        !self.lapsed && self.delivered.is_none() && self.received < self.batch
    }
}

/// What the requests sent may still deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outstanding {
    /// Of the live request and of requests a status closed: counted towards the watermarks.
    pub in_flight: usize,
    /// Of lapsed requests: counted towards the buffer's cap only.
    pub lapsed: usize,
}

#[derive(Debug)]
pub(crate) struct Pulls {
    /// Request id (the last token of its reply subject) → what is known of it.
    requests: BTreeMap<u64, Request>,
    last: u64,
    /// A request that nothing closed lapses this long after it was sent…
    lapse: Duration,
    /// …and is forgotten this long after.
    forget: Duration,
}

impl Pulls {
    pub fn new(lapse: Duration, forget: Duration) -> Self {
        Self {
            requests: BTreeMap::new(),
            last: 0,
            lapse,
            forget: forget.max(lapse),
        }
    }

    /// Records a request of `batch` messages sent at `now`; returns its id.
    pub fn sent(&mut self, batch: usize, now: Instant) -> u64 {
        self.last += 1;
        self.requests.insert(
            self.last,
            Request {
                batch,
                received: 0,
                delivered: None,
                sent_at: now,
                answered: false,
                lapsed: false,
            },
        );
        self.last
    }

    /// The latest request is still live: the next waits for it.
    pub fn live(&self) -> bool {
        self.requests.get(&self.last).is_some_and(Request::live)
    }

    /// A message was delivered (for which request, it does not say).
    pub fn delivered(&mut self) {
        let Some((&id, r)) = self
            .requests
            .iter_mut()
            .rev()
            .find(|(_, r)| r.expected() > 0)
        else {
            return;
        };
        r.received += 1;
        r.answered = true;
        self.prune(id);
    }

    /// An idle heartbeat came for request `id`: it is open at the server.
    pub fn heartbeat(&mut self, id: u64) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.answered = true;
        }
    }

    /// A status closed request `id` with `pending` of its batch undelivered (`None`: it did not say,
    /// so its rest counts as lapsed). True when it is the latest request.
    pub fn closed(&mut self, id: u64, pending: Option<usize>) -> bool {
        if let Some(r) = self.requests.get_mut(&id) {
            r.answered = true;
            match pending {
                Some(pending) => {
                    r.delivered = Some(r.batch.saturating_sub(pending));
                    r.lapsed = false;
                }
                None => r.lapsed = true,
            }
        }
        self.prune(id);
        id == self.last
    }

    /// Lapses the latest request once its time is up and forgets requests older than the forget
    /// time. Returns whether a request lapsed now and whether anything had come for it.
    pub fn tick(&mut self, now: Instant) -> Option<Lapsed> {
        let lapse = self.lapse;
        let mut lapsed = None;
        if let Some(r) = self.requests.get_mut(&self.last)
            && r.live()
            && now >= r.sent_at + lapse
        {
            r.lapsed = true;
            lapsed = Some(Lapsed {
                answered: r.answered,
            });
        }
        let forget = self.forget;
        self.requests.retain(|_, r| now < r.sent_at + forget);
        lapsed
    }

    pub fn outstanding(&self) -> Outstanding {
        let mut out = Outstanding {
            in_flight: 0,
            lapsed: 0,
        };
        for r in self.requests.values() {
            if r.lapsed {
                out.lapsed += r.expected();
            } else {
                out.in_flight += r.expected();
            }
        }
        out
    }

    /// When [`Pulls::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let lapse = self
            .requests
            .get(&self.last)
            .filter(|r| r.live())
            .map(|r| r.sent_at + self.lapse);
        let forget = self
            .requests
            .values()
            .map(|r| r.sent_at + self.forget)
            .min();
        match (lapse, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn prune(&mut self, id: u64) {
        if self.requests.get(&id).is_some_and(|r| r.expected() == 0) {
            self.requests.remove(&id);
        }
    }
}

/// A request lapsed: nothing closed it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lapsed {
    /// Something came for it (a delivery or a heartbeat): the server had it, so it was most likely
    /// dropped at its expiry without a status. Nothing at all suggests a dead connection.
    pub answered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAPSE: Duration = Duration::from_millis(2_250);
    const FORGET: Duration = Duration::from_secs(7);

    fn pulls() -> Pulls {
        Pulls::new(LAPSE, FORGET)
    }

    fn out(in_flight: usize, lapsed: usize) -> Outstanding {
        Outstanding { in_flight, lapsed }
    }

    #[test]
    fn a_filled_request_is_done() {
        let now = Instant::now();
        let mut p = pulls();
        p.sent(2, now);
        assert!(p.live());
        assert_eq!(p.outstanding(), out(2, 0));
        p.delivered();
        assert!(p.live());
        p.delivered();
        assert!(!p.live());
        assert_eq!(p.outstanding(), out(0, 0));
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_408_closes_a_request_with_what_it_says_was_delivered() {
        let now = Instant::now();
        let mut p = pulls();
        let id = p.sent(100, now);
        p.delivered();
        // The server delivered 3 of 100; 2 are still on their way.
        assert!(p.closed(id, Some(97)));
        assert!(!p.live());
        assert_eq!(p.outstanding(), out(2, 0));
        p.delivered();
        p.delivered();
        assert_eq!(p.outstanding(), out(0, 0));
        p.delivered();
        assert_eq!(p.outstanding(), out(0, 0), "nothing expected any more");
    }

    #[test]
    fn a_request_nothing_closes_lapses_and_is_forgotten() {
        let now = Instant::now();
        let mut p = pulls();
        let id = p.sent(100, now);
        p.heartbeat(id);
        assert_eq!(p.next_deadline(), Some(now + LAPSE));
        assert_eq!(p.tick(now + LAPSE - Duration::from_millis(1)), None);
        assert_eq!(p.tick(now + LAPSE), Some(Lapsed { answered: true }));
        assert_eq!(p.tick(now + LAPSE), None, "reported once");
        assert!(!p.live(), "the next request may go");
        assert_eq!(p.outstanding(), out(0, 100));
        // A late delivery is still counted against it.
        p.delivered();
        assert_eq!(p.outstanding(), out(0, 99));
        // A late 408 settles its account exactly.
        p.sent(50, now + LAPSE);
        assert!(!p.closed(id, Some(98)), "not the latest");
        assert_eq!(p.outstanding(), out(51, 0));
        assert_eq!(p.next_deadline(), Some(now + LAPSE + LAPSE));
        p.tick(now + LAPSE + LAPSE);
        assert_eq!(p.outstanding(), out(1, 50));
        p.tick(now + LAPSE + FORGET);
        assert_eq!(p.outstanding(), out(0, 0));
        p.delivered();
        assert_eq!(p.outstanding(), out(0, 0), "forgotten");
    }

    #[test]
    fn a_request_with_no_answer_at_all_says_so() {
        let now = Instant::now();
        let mut p = pulls();
        p.sent(10, now);
        assert_eq!(p.tick(now + LAPSE), Some(Lapsed { answered: false }));
    }

    #[test]
    fn a_status_without_a_count_leaves_the_rest_lapsed() {
        let now = Instant::now();
        let mut p = pulls();
        let id = p.sent(10, now);
        assert!(p.closed(id, None));
        assert!(!p.live());
        assert_eq!(p.outstanding(), out(0, 10));
    }

    #[test]
    fn deliveries_count_against_the_live_request_first() {
        let now = Instant::now();
        let mut p = pulls();
        let first = p.sent(10, now);
        p.delivered();
        // Its 408 overtook 4 of its deliveries.
        assert!(p.closed(first, Some(5)));
        p.sent(3, now);
        assert_eq!(p.outstanding(), out(4 + 3, 0));
        for _ in 0..3 {
            p.delivered();
        }
        assert!(!p.live(), "filled, as far as anyone can tell");
        assert_eq!(p.outstanding(), out(4, 0), "the total is exact");
        for _ in 0..4 {
            p.delivered();
        }
        assert_eq!(p.outstanding(), out(0, 0));
    }

    #[test]
    fn statuses_for_unknown_requests_change_nothing() {
        let now = Instant::now();
        let mut p = pulls();
        p.sent(10, now);
        p.heartbeat(7);
        assert!(!p.closed(7, Some(0)));
        assert_eq!(p.outstanding(), out(10, 0));
        assert!(p.live());
    }
}
