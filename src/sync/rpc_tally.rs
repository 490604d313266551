//! JSON-RPC calls by method and result. A request is seen by method where
//! the RPC server dispatches it (the application thread); its response may
//! be written on any thread that answers it (a C method's completion, a
//! Rust method's task), so the method waits here, keyed by the request,
//! until the response names the result.

use std::collections::{BTreeMap, HashMap};

use super::{lock, Mutex};

/// What a response said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A result.
    Ok,
    /// An error object.
    Error,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

/// Requests dispatched and not yet answered at most: past that, new ones
/// are counted under [`RpcTally::UNMATCHED`] (a server holding that many
/// requests open is already not serving).
const MAX_PENDING: usize = 4096;

/// Calls counted by method and result.
pub struct RpcTally {
    state: Mutex<Tally>,
}

impl Default for RpcTally {
    fn default() -> Self {
        RpcTally {
            state: Mutex::new(Tally::default()),
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Method of each request dispatched and not yet answered.
    pending: HashMap<usize, String>,
    requested: BTreeMap<String, u64>,
    answered: BTreeMap<(String, Outcome), u64>,
}

impl RpcTally {
    /// The method of responses to requests never dispatched: not JSON-RPC,
    /// or refused by the server before dispatch.
    pub const UNMATCHED: &'static str = "(invalid request)";

    /// `request` (an identity, valid until its response) is for `method`:
    /// counted as a request of that method.
    pub fn dispatched(&self, request: usize, method: &str) {
        let mut t = lock(&self.state);
        match t.requested.get_mut(method) {
            Some(n) => *n += 1,
            None => {
                t.requested.insert(method.to_string(), 1);
            }
        }
        if t.pending.len() < MAX_PENDING || t.pending.contains_key(&request) {
            t.pending.insert(request, method.to_string());
        }
    }

    /// The response to `request` is being sent.
    pub fn answered(&self, request: usize, outcome: Outcome) {
        let mut t = lock(&self.state);
        let method = t
            .pending
            .remove(&request)
            .unwrap_or_else(|| Self::UNMATCHED.to_string());
        *t.answered.entry((method, outcome)).or_default() += 1;
    }

    /// Every (method, requests) so far, by method.
    pub fn requests(&self) -> Vec<(String, u64)> {
        lock(&self.state)
            .requested
            .iter()
            .map(|(m, n)| (m.clone(), *n))
            .collect()
    }

    /// Every (method, result, count) so far, by method.
    pub fn counts(&self) -> Vec<(String, Outcome, u64)> {
        lock(&self.state)
            .answered
            .iter()
            .map(|((m, o), n)| (m.clone(), *o, *n))
            .collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn responses_count_under_the_method_of_their_request() {
        let tally = RpcTally::default();
        tally.dispatched(1, "bdev_get_bdevs");
        tally.dispatched(2, "bdev_get_bdevs");
        tally.dispatched(3, "nvmf_create_subsystem");
        tally.answered(2, Outcome::Error);
        tally.answered(1, Outcome::Ok);
        tally.answered(3, Outcome::Ok);
        // A request id is free again once answered: reused, it counts anew.
        tally.dispatched(1, "nvmf_create_subsystem");
        tally.answered(1, Outcome::Error);
        tally.answered(9, Outcome::Error);
        assert_eq!(
            tally.requests(),
            vec![
                ("bdev_get_bdevs".to_string(), 2),
                ("nvmf_create_subsystem".to_string(), 2),
            ]
        );
        assert_eq!(
            tally.counts(),
            vec![
                (RpcTally::UNMATCHED.to_string(), Outcome::Error, 1),
                ("bdev_get_bdevs".to_string(), Outcome::Ok, 1),
                ("bdev_get_bdevs".to_string(), Outcome::Error, 1),
                ("nvmf_create_subsystem".to_string(), Outcome::Ok, 1),
                ("nvmf_create_subsystem".to_string(), Outcome::Error, 1),
            ]
        );
    }

    #[test]
    fn requests_never_answered_cannot_grow_it_without_bound() {
        let tally = RpcTally::default();
        for r in 0..MAX_PENDING + 100 {
            tally.dispatched(r, "bdev_rbd_create");
        }
        assert_eq!(lock(&tally.state).pending.len(), MAX_PENDING);
        tally.answered(MAX_PENDING + 50, Outcome::Ok);
        tally.answered(0, Outcome::Ok);
        assert_eq!(
            tally.counts(),
            vec![
                (RpcTally::UNMATCHED.to_string(), Outcome::Ok, 1),
                ("bdev_rbd_create".to_string(), Outcome::Ok, 1),
            ]
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// A request dispatched on one thread and answered on another, while a
    /// scrape reads the counts on a third: the scrape sees the call either
    /// not yet or under its method, never under another, and afterwards it
    /// is counted once.
    #[test]
    fn a_response_on_another_thread_counts_under_its_method() {
        loom::model(|| {
            let tally = Arc::new(RpcTally::default());
            tally.dispatched(7, "bdev_get_bdevs");
            let answering = {
                let tally = tally.clone();
                loom::thread::spawn(move || tally.answered(7, Outcome::Ok))
            };
            let seen = tally.counts();
            assert!(
                seen.is_empty() || seen == vec![("bdev_get_bdevs".to_string(), Outcome::Ok, 1)],
                "{seen:?}"
            );
            answering.join().unwrap();
            assert_eq!(
                tally.counts(),
                vec![("bdev_get_bdevs".to_string(), Outcome::Ok, 1)]
            );
        });
    }
}
