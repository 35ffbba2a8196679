//! Busy-polling a queue after it runs dry.
//!
//! A worker that sleeps in epoll costs each new request a kick: a VM exit or
//! a syscall in the driver, an eventfd write, a wake-up here. With a polling
//! budget the worker keeps looking at the available ring for that long after
//! draining it, with kicks suppressed, and catches the next request without
//! any of that (QEMU's `poll-max-ns`, SPDK's pollers). It spends a core while
//! it spins, so the budget is small and per disk.
//!
//! ```text
//!  kick ─► drain the ring ─► spin ≤ budget ───── a request ──► drain again
//!              ▲                 │ budget spent
//!              │                 ▼
//!              └── a request ─ re-enable kicks, re-check the ring
//!                                │ empty
//!                                ▼
//!                              epoll (sleep until the next kick)
//! ```
//!
//! Kicks stay suppressed from the first drain to the end of the spin:
//! without EVENT_IDX by `VRING_USED_F_NO_NOTIFY`, with EVENT_IDX because
//! `avail_event` is not moved while the worker runs. Re-enabling them and
//! then reading the ring once more (after a full fence) closes the window in
//! which a request could arrive unseen and unkicked. A ring the frontend
//! stops or disables ends the spin at once, and the worker goes back to epoll
//! without touching the ring again.

use std::io;
use std::time::{Duration, Instant};

/// What a look at the available ring found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingState {
    /// The driver has made requests available that the worker has not taken.
    Pending,
    /// Nothing new.
    Empty,
    /// The ring is stopped or disabled: the worker must not touch it.
    Stopped,
}

/// How a spin ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinEnd {
    /// A request arrived: drain the ring again.
    Work,
    /// The budget ran out with the ring empty.
    Idle,
    /// The ring was stopped.
    Stopped,
}

/// A virtqueue as the serving loop drives it.
pub trait PolledRing {
    /// Asks the driver not to kick (a hint it may ignore).
    fn suppress_kicks(&mut self) -> io::Result<()>;
    /// Serves every available request, batch after batch, until none is left.
    fn drain(&mut self) -> io::Result<()>;
    /// Looks at the available ring without taking anything.
    fn peek(&self) -> io::Result<RingState>;
    /// Asks the driver to kick again, then reports whether requests were
    /// made available that it may not have kicked for.
    fn rearm_kicks(&mut self) -> io::Result<bool>;
    /// Whether the frontend has stopped the ring (nothing can be taken).
    fn stopped(&self) -> bool;
}

/// Serves `ring` after a kick, until it is empty and kicks are armed again
/// (the diagram above). `event_idx`: kicks are suppressed while the worker
/// runs even without polling, as they cost nothing to suppress there.
pub fn serve(
    ring: &mut impl PolledRing,
    budget: Duration,
    event_idx: bool,
    mut now: impl FnMut() -> Instant,
) -> io::Result<()> {
    let suppress = event_idx || !budget.is_zero();
    loop {
        if suppress {
            ring.suppress_kicks()?;
        }
        ring.drain()?;
        match spin(budget, &mut now, || ring.peek())? {
            SpinEnd::Work => continue,
            // A stopped ring belongs to the frontend again: not even its
            // notification fields may be written.
            SpinEnd::Stopped => return Ok(()),
            SpinEnd::Idle => {}
        }
        // A stopped ring is the frontend's again: leave even its
        // notification fields alone.
        if !suppress || ring.stopped() {
            return Ok(());
        }
        // A stopped ring has nothing to take, however full it looks.
        if !ring.rearm_kicks()? || ring.stopped() {
            return Ok(());
        }
    }
}

/// Looks at the ring with `peek` until it has work or is stopped, or
/// `budget` (as measured by `now`) has passed since the spin began. A zero
/// budget never looks.
pub fn spin<E>(
    budget: Duration,
    mut now: impl FnMut() -> Instant,
    mut peek: impl FnMut() -> Result<RingState, E>,
) -> Result<SpinEnd, E> {
    if budget.is_zero() {
        return Ok(SpinEnd::Idle);
    }
    let start = now();
    loop {
        match peek()? {
            RingState::Pending => return Ok(SpinEnd::Work),
            RingState::Stopped => return Ok(SpinEnd::Stopped),
            RingState::Empty => {}
        }
        if now().saturating_duration_since(start) >= budget {
            return Ok(SpinEnd::Idle);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use super::*;

    /// A scripted ring: requests appear at a given look or at re-arming.
    #[derive(Default)]
    struct Script {
        pending: Cell<u32>,
        served: u32,
        armed: bool,
        stopped: bool,
        looks: Cell<u32>,
        /// A request appears at this look.
        arrive_at_look: Option<u32>,
        /// A request appears just before kicks are re-armed, once.
        arrive_before_rearm: bool,
        log: Vec<&'static str>,
    }

    impl PolledRing for Script {
        fn suppress_kicks(&mut self) -> io::Result<()> {
            self.armed = false;
            self.log.push("suppress");
            Ok(())
        }
        fn drain(&mut self) -> io::Result<()> {
            if !self.stopped {
                self.served += self.pending.replace(0);
            }
            self.log.push("drain");
            Ok(())
        }
        fn peek(&self) -> io::Result<RingState> {
            self.looks.set(self.looks.get() + 1);
            if self.arrive_at_look == Some(self.looks.get()) {
                self.pending.set(self.pending.get() + 1);
            }
            Ok(match (self.stopped, self.pending.get()) {
                (true, _) => RingState::Stopped,
                (false, 0) => RingState::Empty,
                _ => RingState::Pending,
            })
        }
        fn rearm_kicks(&mut self) -> io::Result<bool> {
            if std::mem::take(&mut self.arrive_before_rearm) {
                self.pending.set(self.pending.get() + 1);
            }
            self.armed = true;
            self.log.push("rearm");
            Ok(self.pending.get() > 0)
        }
        fn stopped(&self) -> bool {
            self.stopped
        }
    }

    fn kicked(pending: u32) -> Script {
        Script {
            pending: Cell::new(pending),
            armed: true,
            ..Script::default()
        }
    }

    #[test]
    fn without_event_idx_or_polling_kicks_are_left_alone() {
        let mut ring = kicked(2);
        serve(&mut ring, Duration::ZERO, false, fake_clock()).unwrap();
        assert_eq!((ring.served, ring.log.as_slice()), (2, &["drain"][..]));
        assert_eq!(ring.looks.get(), 0);
    }

    #[test]
    fn a_request_made_before_kicks_are_rearmed_is_not_left_behind() {
        for budget in [Duration::ZERO, Duration::from_micros(50)] {
            let mut ring = Script {
                arrive_before_rearm: true,
                ..kicked(1)
            };
            serve(&mut ring, budget, true, fake_clock()).unwrap();
            assert_eq!(ring.served, 2, "budget {budget:?}");
            assert!(ring.armed);
            assert_eq!(
                ring.log,
                ["suppress", "drain", "rearm", "suppress", "drain", "rearm"]
            );
        }
    }

    #[test]
    fn a_request_during_the_spin_is_taken_with_kicks_still_suppressed() {
        let mut ring = Script {
            arrive_at_look: Some(30),
            ..kicked(1)
        };
        serve(&mut ring, Duration::from_micros(50), false, fake_clock()).unwrap();
        assert_eq!(ring.served, 2);
        assert_eq!(
            ring.log,
            ["suppress", "drain", "suppress", "drain", "rearm"]
        );
        assert!(ring.armed, "kicks are armed when the worker sleeps");
    }

    #[test]
    fn a_stopped_ring_ends_the_work_even_if_it_looks_full() {
        let mut ring = Script {
            stopped: true,
            ..kicked(3)
        };
        serve(&mut ring, Duration::from_secs(3600), true, fake_clock()).unwrap();
        assert_eq!(ring.served, 0);
        assert_eq!(ring.looks.get(), 1, "the spin ends at the first look");
        assert_eq!(
            ring.log,
            ["suppress", "drain"],
            "a stopped ring is not touched"
        );
    }

    #[test]
    fn a_ring_stopped_without_polling_is_not_rearmed() {
        // No budget: the spin never looks, so the stop is noticed before
        // kicks would be re-armed in a ring the frontend owns again.
        let mut ring = Script {
            stopped: true,
            ..kicked(1)
        };
        serve(&mut ring, Duration::ZERO, true, fake_clock()).unwrap();
        assert_eq!(ring.log, ["suppress", "drain"]);
        assert!(!ring.armed);
    }

    /// A clock that advances 1 µs per reading.
    fn fake_clock() -> impl FnMut() -> Instant {
        let origin = Instant::now();
        let ticks = Cell::new(0u64);
        move || {
            ticks.set(ticks.get() + 1);
            origin + Duration::from_micros(ticks.get())
        }
    }

    /// A ring that is empty for `empty_looks` looks, then reads `then`.
    fn ring(
        empty_looks: u32,
        then: RingState,
    ) -> (
        impl FnMut() -> Result<RingState, Infallible>,
        std::rc::Rc<Cell<u32>>,
    ) {
        let looks = std::rc::Rc::new(Cell::new(0u32));
        let counter = looks.clone();
        let peek = move || {
            counter.set(counter.get() + 1);
            Ok(if counter.get() > empty_looks {
                then
            } else {
                RingState::Empty
            })
        };
        (peek, looks)
    }

    #[test]
    fn a_request_within_the_budget_is_work() {
        let (peek, looks) = ring(10, RingState::Pending);
        let end = spin(Duration::from_micros(50), fake_clock(), peek);
        assert_eq!(end, Ok(SpinEnd::Work));
        assert_eq!(looks.get(), 11);
    }

    #[test]
    fn the_budget_bounds_the_spin() {
        let (peek, looks) = ring(u32::MAX, RingState::Pending);
        assert_eq!(
            spin(Duration::from_micros(50), fake_clock(), peek),
            Ok(SpinEnd::Idle)
        );
        // One clock reading at the start, then one per look.
        assert_eq!(looks.get(), 50);
    }

    #[test]
    fn a_request_after_the_budget_is_left_to_the_kick() {
        let (peek, looks) = ring(100, RingState::Pending);
        assert_eq!(
            spin(Duration::from_micros(20), fake_clock(), peek),
            Ok(SpinEnd::Idle)
        );
        assert_eq!(looks.get(), 20);
    }

    #[test]
    fn a_stopped_ring_ends_the_spin_at_once() {
        let (peek, looks) = ring(3, RingState::Stopped);
        assert_eq!(
            spin(Duration::from_secs(3600), fake_clock(), peek),
            Ok(SpinEnd::Stopped)
        );
        assert_eq!(looks.get(), 4);
    }

    #[test]
    fn no_budget_means_no_look() {
        let (peek, looks) = ring(0, RingState::Pending);
        assert_eq!(spin(Duration::ZERO, fake_clock(), peek), Ok(SpinEnd::Idle));
        assert_eq!(looks.get(), 0);
    }

    #[test]
    fn errors_end_the_spin() {
        let end = spin(Duration::from_micros(5), fake_clock(), || Err("gone"));
        assert_eq!(end, Err("gone"));
    }

    #[test]
    fn the_real_clock_ends_the_spin() {
        let began = Instant::now();
        let end = spin(Duration::from_millis(2), Instant::now, || {
            Ok::<_, Infallible>(RingState::Empty)
        });
        assert_eq!(end, Ok(SpinEnd::Idle));
        assert!(began.elapsed() >= Duration::from_millis(2));
    }
}
