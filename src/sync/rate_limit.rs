//! How many lines of one kind may be shown per window of time: the first
//! `burst` of each window are, the rest are counted, and the count is
//! handed back once the window is over (to say what was left out). Every
//! thread that logs (reactors, librbd's, the pmem workers) comes here, so
//! the lock is held only to look up and bump one window.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{lock, Mutex};

/// Kinds tracked at most; lines of further kinds are shown unlimited
/// (kinds are source lines: a real program has far fewer that log).
const MAX_KINDS: usize = 4096;
/// How often windows of kinds that stopped logging are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A rate limit per kind of line.
pub struct RateLimit<K> {
    burst: u32,
    window: Duration,
    state: Mutex<Windows<K>>,
}

struct Windows<K> {
    by_kind: HashMap<K, Window>,
    last_sweep: Option<Instant>,
}

struct Window {
    start: Instant,
    shown: u32,
    suppressed: u64,
}

/// A window that ended with lines left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Suppressed<K> {
    pub kind: K,
    pub count: u64,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// At most `burst` lines of each kind per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            burst,
            window,
            state: Mutex::new(Windows {
                by_kind: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Lines of a kind shown per window.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether a line of `kind` at `now` is to be shown, and the windows
    /// that ended with lines left out (to report first).
    pub fn admit(&self, kind: &K, now: Instant) -> (bool, Vec<Suppressed<K>>) {
        let mut state = lock(&self.state);
        let mut ended = Vec::new();
        let window = self.window;
        let sweep_due = state
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if sweep_due {
            state.last_sweep = Some(now);
            end_windows(&mut state.by_kind, window, now, &mut ended);
        }
        if !state.by_kind.contains_key(kind) && state.by_kind.len() >= MAX_KINDS {
            return (true, ended);
        }
        let w = state.by_kind.entry(kind.clone()).or_insert(Window {
            start: now,
            shown: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(w.start) >= window {
            if w.suppressed > 0 {
                ended.push(Suppressed {
                    kind: kind.clone(),
                    count: w.suppressed,
                });
            }
            *w = Window {
                start: now,
                shown: 0,
                suppressed: 0,
            };
        }
        let show = w.shown < self.burst;
        if show {
            w.shown += 1;
        } else {
            w.suppressed += 1;
        }
        (show, ended)
    }

    /// Ends the windows that are over by `now`, handing back those with
    /// lines left out: called on a timer, so that a kind that floods and
    /// then goes quiet is reported within about a window even if nothing
    /// else is logged.
    pub fn expire(&self, now: Instant) -> Vec<Suppressed<K>> {
        let mut state = lock(&self.state);
        let mut ended = Vec::new();
        state.last_sweep = Some(now);
        end_windows(&mut state.by_kind, self.window, now, &mut ended);
        ended
    }

    /// Ends every window, handing back those with lines left out (at exit).
    pub fn drain(&self) -> Vec<Suppressed<K>> {
        let mut state = lock(&self.state);
        state
            .by_kind
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(kind, w)| Suppressed {
                kind,
                count: w.suppressed,
            })
            .collect()
    }
}

/// Drops the windows over by `now`, pushing those with lines left out.
fn end_windows<K: Clone>(
    by_kind: &mut HashMap<K, Window>,
    window: Duration,
    now: Instant,
    ended: &mut Vec<Suppressed<K>>,
) {
    by_kind.retain(|k, w| {
        if now.saturating_duration_since(w.start) < window {
            return true;
        }
        if w.suppressed > 0 {
            ended.push(Suppressed {
                kind: k.clone(),
                count: w.suppressed,
            });
        }
        false
    });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_per_kind_and_then_what_was_left_out() {
        let limit = RateLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limit.admit(&"a", at(0)), (true, vec![]));
        assert_eq!(limit.admit(&"a", at(1)), (true, vec![]));
        assert_eq!(limit.admit(&"a", at(2)), (false, vec![]));
        assert_eq!(limit.admit(&"a", at(3)), (false, vec![]));
        // Another kind has a window of its own.
        assert_eq!(limit.admit(&"b", at(3)), (true, vec![]));
        // The window of "a" is over: the two left out are reported.
        let (show, ended) = limit.admit(&"a", at(10));
        assert!(show);
        assert_eq!(
            ended,
            vec![Suppressed {
                kind: "a",
                count: 2
            }]
        );
        assert_eq!(limit.admit(&"a", at(11)), (true, vec![]));
        assert_eq!(limit.admit(&"a", at(12)), (false, vec![]));
        assert_eq!(
            limit.drain(),
            vec![Suppressed {
                kind: "a",
                count: 1
            }]
        );
        assert_eq!(limit.drain(), vec![]);
    }

    #[test]
    fn a_kind_that_went_quiet_is_reported_when_another_logs() {
        let limit = RateLimit::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        limit.admit(&"flood", t0);
        for _ in 0..5 {
            limit.admit(&"flood", t0);
        }
        let (show, ended) = limit.admit(&"other", t0 + Duration::from_secs(20));
        assert!(show);
        assert_eq!(
            ended,
            vec![Suppressed {
                kind: "flood",
                count: 5
            }]
        );
    }

    #[test]
    fn a_kind_that_went_quiet_is_reported_by_the_timer_once_its_window_is_over() {
        let limit = RateLimit::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..4 {
            limit.admit(&"flood", t0);
        }
        limit.admit(&"shown", t0);
        assert_eq!(limit.expire(t0 + Duration::from_secs(9)), vec![]);
        assert_eq!(
            limit.expire(t0 + Duration::from_secs(10)),
            vec![Suppressed {
                kind: "flood",
                count: 3
            }]
        );
        assert_eq!(limit.drain(), vec![]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two threads log one kind with a burst of one: exactly one line is
    /// shown and the other is counted, whatever the interleaving.
    #[test]
    fn one_of_two_racing_lines_is_shown_and_the_other_counted() {
        loom::model(|| {
            let limit = Arc::new(RateLimit::new(1, Duration::from_secs(10)));
            let now = Instant::now();
            let other = {
                let limit = limit.clone();
                loom::thread::spawn(move || limit.admit(&1u8, now).0)
            };
            let mine = limit.admit(&1u8, now).0;
            let theirs = other.join().unwrap();
            assert!(mine != theirs, "shown: {mine} and {theirs}");
            assert_eq!(
                limit.drain(),
                vec![Suppressed {
                    kind: 1u8,
                    count: 1
                }]
            );
        });
    }
}
