//! Puts transcoded segments back in order. Several uploads are in flight
//! at once and answer in any order; their renditions must reach the stream
//! in segment order. A segment whose answer has not come by its deadline
//! is given up (counted) so the ones after it are not held back; an answer
//! that comes after that is dropped. Sans-IO: the caller passes `now`.

use std::collections::BTreeMap;
use std::time::Instant;

/// What the head of the order is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn<T> {
    /// Segment `seq` answered: its result goes out now.
    Ready(u64, T),
    /// Segment `seq` failed or missed its deadline: nothing goes out for it.
    Skipped(u64),
}

enum Slot<T> {
    Waiting(Instant),
    Done(Option<T>),
}

/// Segments sent and not yet handed on, by sequence number.
pub struct InOrder<T> {
    slots: BTreeMap<u64, Slot<T>>,
    /// Segments given up at their deadline.
    pub late: u64,
    /// Answers that came after their segment was given up.
    pub stale: u64,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder { slots: BTreeMap::new(), late: 0, stale: 0 }
    }
}

impl<T> InOrder<T> {
    /// Segment `seq` was sent; give it up at `deadline`.
    pub fn sent(&mut self, seq: u64, deadline: Instant) {
        self.slots.insert(seq, Slot::Waiting(deadline));
    }

    /// Segment `seq` answered (`None`: it failed).
    pub fn done(&mut self, seq: u64, result: Option<T>) {
        match self.slots.get_mut(&seq) {
            Some(slot @ Slot::Waiting(_)) => *slot = Slot::Done(result),
            _ => self.stale += 1,
        }
    }

    /// Segments in flight or waiting for an earlier one.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The earliest deadline still open, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| if let Slot::Waiting(d) = s { Some(*d) } else { None }).min()
    }

    /// The next segment in order that is decided at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Turn<T>> {
        let head = self.slots.first_entry()?;
        let seq = *head.key();
        match head.get() {
            Slot::Waiting(deadline) if now < *deadline => None,
            Slot::Waiting(_) => {
                head.remove();
                self.late += 1;
                Some(Turn::Skipped(seq))
            }
            Slot::Done(_) => match head.remove() {
                Slot::Done(Some(r)) => Some(Turn::Ready(seq, r)),
                _ => Some(Turn::Skipped(seq)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_out_of_order_go_out_in_order() {
        let t0 = Instant::now();
        let mut o = InOrder::default();
        o.sent(0, t0 + Duration::from_secs(3));
        o.sent(1, t0 + Duration::from_secs(4));
        o.done(1, Some("one"));
        assert_eq!(o.poll(t0), None, "segment 0 is still in flight");
        o.done(0, Some("zero"));
        assert_eq!(o.poll(t0), Some(Turn::Ready(0, "zero")));
        assert_eq!(o.poll(t0), Some(Turn::Ready(1, "one")));
        assert!(o.is_empty());
    }

    #[test]
    fn a_late_or_failed_segment_is_skipped_and_never_blocks() {
        let t0 = Instant::now();
        let mut o = InOrder::default();
        o.sent(5, t0 + Duration::from_secs(1));
        o.sent(6, t0 + Duration::from_secs(2));
        o.sent(7, t0 + Duration::from_secs(3));
        o.done(6, Some(6));
        o.done(7, None);
        assert_eq!(o.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(o.poll(t0 + Duration::from_millis(500)), None);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(o.poll(later), Some(Turn::Skipped(5)));
        assert_eq!(o.poll(later), Some(Turn::Ready(6, 6)));
        assert_eq!(o.poll(later), Some(Turn::Skipped(7)), "a failed upload");
        o.done(5, Some(5));
        assert_eq!((o.late, o.stale), (1, 1));
        assert_eq!(o.poll(later), None);
    }
}
