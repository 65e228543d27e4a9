//! Timers: the process clock, the timing wheel, and the thread that runs it.
//!
//! sipreg has one timer thread for the whole process. Workers and the registrar send it
//! [`TimerCmd::At`] over a crossbeam channel; it keeps the items in a
//! [`wheel::Wheel`] and, when they come due, hands each to the `fire` closure it
//! was spawned with (which typically posts an expiry to the device table or asks the
//! owning worker to retransmit).
//!
//! # Cancellation is by generation
//!
//! There is no "cancel" command and the wheel never searches for an item. Each item
//! carries the key and generation of what it is about (e.g. an AOR and the binding
//! generation at the time it was scheduled); an item that must fire earlier than the
//! pending one bumps the generation in the device table and is scheduled anew. When
//! an old item fires, `fire` looks up the key, sees a newer generation, and does
//! nothing. Cancelling would cost a search, or a handle per timer. A refresh, the hot
//! path, only moves a deadline later: it schedules nothing, and the pending item, when
//! it fires early, re-arms itself at the new deadline (`fire` returns it; see
//! `registry::Device::arm_expiry`), so the wheel holds one item per device.
//!
//! # Time
//!
//! [`now_ms`] is the one clock every component uses for deadlines, so a deadline
//! computed by a worker means the same instant to the timer thread. It is monotonic
//! and process-local: never persist it (snapshots store wall-clock expiry and convert
//! on load). The timer thread reads it once per slice (below) and passes that reading
//! to `fire`, so handling an item costs no clock read of its own.
//!
//! # Firing in slices
//!
//! A million registrations can expire within one second, and each `fire` write-locks
//! a shard of the device table that the workers use too. Fired in one go, such a
//! batch keeps the timer thread running for about a second; on a machine with fewer
//! cores than threads the scheduler then preempts it at an arbitrary point — most
//! likely inside `fire`, holding a shard lock — and a worker that needs that shard
//! waits until the timer thread is scheduled again: a whole scheduler time slice
//! (measured on 2 cores: one 100-ms interval with a refresh p99 of 7.2 ms, and one
//! 65 ms stall). So the thread fires at most [`FIRE_SLICE`] items per advance of
//! the wheel and, when more are due, calls `yield_now` before the next slice, at a
//! point where it holds no lock: workers sharing its core get the core back within
//! about a millisecond, and the kernel seldom needs to preempt it mid-`fire`.
//! Commands are applied between slices as between ordinary advances, so a backlog
//! of expiries does not hold up new timers.

pub mod wheel;

use std::io;
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use self::wheel::{Wheel, TICK_MS};

/// Most commands applied between two advances of the wheel. Without a bound, senders
/// that outpace the thread would keep it draining the channel and due timers would
/// never fire; 65 536 inserts take about a millisecond, well under a tick. When a
/// batch is cut short the thread skips its next sleep.
const MAX_BATCH: usize = 1 << 16;

/// Most items fired per advance of the wheel before the thread yields the core (see
/// "Firing in slices" in the module docs). A binding expiry costs about 0.85 µs
/// (measured in the server: a device-table lookup under a shard write-lock), so a
/// slice is about a millisecond: far below the stalls measured without slices, and
/// long enough that the clock read, channel poll and `yield_now` between two slices
/// (a few µs) cost well under 1 % of it.
pub const FIRE_SLICE: usize = 1024;

/// Milliseconds since the process-wide clock started (the first call to this
/// function). Monotonic: never goes back, unaffected by wall-clock changes.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // u64 milliseconds overflow after 584 million years; saturate rather than wrap.
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A command to the timer thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerCmd<T> {
    /// Hand `item` to `fire` once [`now_ms`] reaches `deadline_ms` (within one
    /// [`wheel::TICK_MS`] after it). A deadline already passed fires at once.
    At {
        /// Deadline on the [`now_ms`] clock.
        deadline_ms: u64,
        /// What to fire; carries its own generation for cancellation.
        item: T,
    },
    /// Stop the thread. Items still scheduled are dropped without firing.
    Shutdown,
}

/// Spawns the timer thread `name`. It schedules the items it receives on `rx` and calls
/// `fire(item, now_ms)` with each one when it comes due, in deadline order; `now_ms`
/// is the [`now_ms`] reading the wheel was advanced to for the current slice (at
/// most [`FIRE_SLICE`] items), so `fire` need not read the clock. It ends on
/// [`TimerCmd::Shutdown`] or when every sender of `rx` has been dropped; items still
/// scheduled then are dropped. `fire` may return `Some((deadline_ms, item))` to
/// re-arm an item (a device with bindings left after an expiry) without going
/// through the channel, which the timer thread must never block on itself.
/// A panic in `fire` ends the thread and shows up in [`JoinHandle::join`].
///
/// # Errors
///
/// The OS error if the thread cannot be created.
pub fn spawn<T: Send + 'static>(
    name: &str,
    rx: Receiver<TimerCmd<T>>,
    fire: impl FnMut(T, u64) -> Option<(u64, T)> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(&rx, now_ms, fire))
}

/// The timer thread's loop: wait for a command or the next deadline, apply a batch of
/// commands, advance the wheel to `clock()` and fire a slice of what is due; with more
/// due, yield and go round again without sleeping. `clock` is [`now_ms`] but for
/// tests, which drive time by hand.
fn run<T>(
    rx: &Receiver<TimerCmd<T>>,
    clock: impl Fn() -> u64,
    mut fire: impl FnMut(T, u64) -> Option<(u64, T)>,
) {
    let mut wheel = Wheel::new(clock());
    // Re-armed items wait here while the wheel is borrowed by `advance_up_to`; the
    // vector keeps its capacity, so steady state allocates nothing.
    let mut rearm: Vec<(u64, T)> = Vec::new();
    // Commands left in the channel by a cut-short batch.
    let mut backlog = false;
    // Items left due by a slice.
    let mut due = false;
    log::debug!("timer thread started");
    loop {
        // Poll instead of blocking in `recv`: a sender then never has a parked
        // receiver to wake, so scheduling an expiry costs a worker no futex
        // syscall and this thread no context switch per REGISTER. Sleeping one
        // tick (or less, when a deadline is nearer) keeps firing within a tick.
        if !backlog && !due {
            let wait_ms = wheel
                .next_deadline_ms()
                .map_or(TICK_MS, |d| d.saturating_sub(clock()).min(TICK_MS));
            if wait_ms > 0 {
                thread::sleep(Duration::from_millis(wait_ms));
            }
        }
        let mut stop = false;
        backlog = true;
        for _ in 0..MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => {
                    if !apply(&mut wheel, cmd) {
                        stop = true;
                        break;
                    }
                }
                Err(TryRecvError::Empty) => {
                    backlog = false;
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    log::debug!("timer thread: every sender dropped");
                    stop = true;
                    break;
                }
            }
        }
        if stop {
            break;
        }
        let now = clock();
        due = wheel.advance_up_to(now, FIRE_SLICE, |item| rearm.extend(fire(item, now)));
        for (deadline_ms, item) in rearm.drain(..) {
            wheel.insert(deadline_ms, item);
        }
        if due {
            // Between slices no lock is held: let a waiting worker have the core now
            // rather than when the scheduler preempts us inside `fire`.
            thread::yield_now();
        }
    }
    log::debug!("timer thread stopped, {} items dropped", wheel.len());
}

/// Applies one command; `false` means stop.
fn apply<T>(wheel: &mut Wheel<T>, cmd: TimerCmd<T>) -> bool {
    match cmd {
        TimerCmd::At { deadline_ms, item } => {
            wheel.insert(deadline_ms, item);
            true
        }
        TimerCmd::Shutdown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::wheel::TICK_MS;
    use super::*;
    use crossbeam_channel::{unbounded, RecvTimeoutError};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Scheduling latency allowed on a loaded 2-core CI machine on top of the one-tick
    /// rounding. The wheel's own precision is tested exactly, without threads, in
    /// `wheel.rs`; this checks the thread wakes at deadlines rather than at its cap.
    const SLACK_MS: u64 = 100;

    /// Upper bound for any single wait in these tests, so a bug fails instead of hangs.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn now_ms_is_monotonic() {
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a);
    }

    #[test]
    fn fires_scheduled_items_on_time() {
        let (tx, rx) = unbounded();
        let (fired_tx, fired_rx) = unbounded();
        let handle = spawn("timer-test", rx, move |id: u32, now| {
            // Record the firing time inside the thread, not when the test gets to it:
            // the clock reading the wheel advanced to, which `fire` is given.
            let _ = fired_tx.send((id, now));
            None
        })
        .expect("spawn timer thread");

        let base = now_ms();
        // Out of order, one already due, two sharing a tick, one past the 100 ms cap
        // and past the level-0 range (640 ms) so it cascades first.
        let deadlines = [
            (1, base + 120),
            (2, base + 20),
            (3, base),
            (4, base + 21),
            (5, base + 55),
            (6, base + 700),
        ];
        for &(id, deadline_ms) in &deadlines {
            tx.send(TimerCmd::At {
                deadline_ms,
                item: id,
            })
            .expect("timer thread alive");
        }

        let mut seen = Vec::new();
        while seen.len() < deadlines.len() {
            let (id, at) = fired_rx
                .recv_timeout(TEST_TIMEOUT)
                .expect("every item fires");
            let deadline = deadlines
                .iter()
                .find(|&&(i, _)| i == id)
                .map(|&(_, d)| d)
                .expect("known id");
            assert!(at >= deadline, "item {id} fired at {at}, before {deadline}");
            assert!(
                at <= deadline + TICK_MS + SLACK_MS,
                "item {id} fired at {at}, deadline {deadline}"
            );
            seen.push(id);
        }
        // Order is the wheel's business and tested there exactly; here a slow thread
        // start may legitimately make several items due at once.
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "each item fires exactly once");

        tx.send(TimerCmd::Shutdown).expect("timer thread alive");
        handle.join().expect("timer thread exits cleanly");
    }

    #[test]
    fn stale_generation_is_ignored_by_fire() {
        // The cancellation pattern: a refresh bumps the generation and schedules a new
        // item; the old one still fires but `fire` drops it.
        let current = Arc::new(AtomicU64::new(1));
        let (tx, rx) = unbounded();
        let (fired_tx, fired_rx) = unbounded();
        let seen_gen = Arc::clone(&current);
        let handle = spawn("timer-gen", rx, move |generation: u64, _now| {
            if generation == seen_gen.load(Ordering::Acquire) {
                let _ = fired_tx.send(generation);
            }
            None
        })
        .expect("spawn timer thread");

        let base = now_ms();
        tx.send(TimerCmd::At {
            deadline_ms: base + 20,
            item: 1,
        })
        .expect("timer thread alive");
        current.store(2, Ordering::Release); // refresh before generation 1 fires
        tx.send(TimerCmd::At {
            deadline_ms: base + 40,
            item: 2,
        })
        .expect("timer thread alive");

        assert_eq!(fired_rx.recv_timeout(TEST_TIMEOUT), Ok(2));
        drop(tx);
        handle.join().expect("timer thread exits cleanly");
        // The thread has ended and dropped `fire`: nothing else was ever sent.
        assert_eq!(
            fired_rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        );
    }

    #[test]
    fn shutdown_ends_thread_and_drops_pending() {
        let (tx, rx) = unbounded();
        let (fired_tx, fired_rx) = unbounded::<u8>();
        let handle = spawn("timer-shutdown", rx, move |x, _now| {
            let _ = fired_tx.send(x);
            None
        })
        .expect("spawn timer thread");
        tx.send(TimerCmd::At {
            deadline_ms: now_ms() + 60_000,
            item: 1,
        })
        .expect("timer thread alive");
        tx.send(TimerCmd::Shutdown).expect("timer thread alive");
        // When the thread ends it drops `fire` and with it `fired_tx`: that is the
        // signal, observed without sleeping or polling.
        assert_eq!(
            fired_rx.recv_timeout(TEST_TIMEOUT),
            Err(RecvTimeoutError::Disconnected)
        );
        handle.join().expect("timer thread exits cleanly");
        // The sender is still alive but the thread is gone.
        assert!(tx
            .send(TimerCmd::At {
                deadline_ms: 0,
                item: 2
            })
            .is_err());
    }

    #[test]
    fn fire_can_rearm_without_the_channel() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (fired_tx, fired_rx) = unbounded();
        let handle = spawn("timer-rearm", rx, move |n: u32, now| {
            let _ = fired_tx.send((n, now));
            // Re-arm three times, 20 ms apart, as an expiry with bindings left does.
            (n < 3).then(|| (now + 20, n + 1))
        })
        .unwrap();
        tx.send(TimerCmd::At {
            deadline_ms: now_ms(),
            item: 0,
        })
        .unwrap();
        let mut last = 0;
        for want in 0..4 {
            let (n, at) = fired_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(n, want);
            if want > 0 {
                assert!(
                    at >= last + 20,
                    "re-armed item fired early: {at} < {last} + 20"
                );
            }
            last = at;
        }
        tx.send(TimerCmd::Shutdown).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn dropping_every_sender_ends_thread() {
        let (tx, rx) = unbounded::<TimerCmd<u8>>();
        let (fired_tx, fired_rx) = unbounded::<u8>();
        let handle = spawn("timer-drop", rx, move |x, _now| {
            let _ = fired_tx.send(x);
            None
        })
        .expect("spawn timer thread");
        let tx2 = tx.clone();
        drop(tx);
        tx2.send(TimerCmd::At {
            deadline_ms: 0,
            item: 7,
        })
        .expect("timer thread alive");
        assert_eq!(fired_rx.recv_timeout(TEST_TIMEOUT), Ok(7));
        drop(tx2);
        assert_eq!(
            fired_rx.recv_timeout(TEST_TIMEOUT),
            Err(RecvTimeoutError::Disconnected)
        );
        handle.join().expect("timer thread exits cleanly");
    }

    #[test]
    fn a_burst_larger_than_a_batch_all_fires() {
        let (tx, rx) = unbounded();
        let (fired_tx, fired_rx) = unbounded();
        let handle = spawn("timer-burst", rx, move |x: usize, _now| {
            let _ = fired_tx.send(x);
            None
        })
        .expect("spawn timer thread");
        let n = MAX_BATCH * 3 + 17;
        let deadline_ms = now_ms() + 30;
        for i in 0..n {
            tx.send(TimerCmd::At {
                deadline_ms,
                item: i,
            })
            .expect("timer thread alive");
        }
        // Same deadline, one sender: insertion order survives batching.
        for i in 0..n {
            assert_eq!(fired_rx.recv_timeout(TEST_TIMEOUT), Ok(i));
        }
        tx.send(TimerCmd::Shutdown).expect("timer thread alive");
        handle.join().expect("timer thread exits cleanly");
    }

    #[test]
    fn a_large_due_batch_fires_in_slices_with_commands_in_between() {
        // 200 000 items on 2 000 ticks (100 each, so across wheel levels 0 to 2) come
        // due at once when the test moves its clock past them all. Sent from inside
        // `fire` after the first of them, a command for an already-passed deadline
        // must be applied between two slices and fire within the next one — long
        // before the batch is done — and nothing may be lost, duplicated or reordered.
        const N: u64 = 200_000;
        const SENTINEL: u64 = u64::MAX;
        const PROBE: u64 = u64::MAX - 1;
        let clock = Arc::new(AtomicU64::new(1_000));
        let (tx, rx) = unbounded();
        let (fired_tx, fired_rx) = unbounded();
        let handle = {
            let clock = Arc::clone(&clock);
            let probe_tx = tx.clone();
            thread::Builder::new()
                .name("timer-slices".into())
                .spawn(move || {
                    let fire = move |x: u64, now: u64| {
                        if x == 0 {
                            let probe = TimerCmd::At {
                                deadline_ms: 0,
                                item: PROBE,
                            };
                            probe_tx.send(probe).expect("own channel open");
                        }
                        let _ = fired_tx.send((x, now));
                        None
                    };
                    run(&rx, move || clock.load(Ordering::Acquire), fire);
                })
                .expect("spawn timer thread")
        };
        let deadline = |i: u64| 2_000 + i / 100 * TICK_MS;
        for i in 0..N {
            tx.send(TimerCmd::At {
                deadline_ms: deadline(i),
                item: i,
            })
            .expect("timer thread alive");
        }
        // Due on arrival: once it fires, every item before it in the channel is in
        // the wheel, and with the clock at 1 000 none of them is due.
        tx.send(TimerCmd::At {
            deadline_ms: 0,
            item: SENTINEL,
        })
        .expect("timer thread alive");
        assert_eq!(fired_rx.recv_timeout(TEST_TIMEOUT), Ok((SENTINEL, 1_000)));

        let now = deadline(N - 1) + TICK_MS;
        clock.store(now, Ordering::Release);
        let mut order = Vec::new();
        for _ in 0..=N {
            let (x, at) = fired_rx
                .recv_timeout(TEST_TIMEOUT)
                .expect("every item fires");
            assert_eq!(at, now, "item {x}: fire gets the slice's clock reading");
            order.push(x);
        }
        let probe_at = order.iter().position(|&x| x == PROBE).expect("probe fires");
        // The first slice ends inside a 100-item tick; the next fires that tick's rest,
        // then the probe.
        assert!(
            probe_at <= FIRE_SLICE + 100,
            "probe fired {probe_at}th of {N}: not applied between slices"
        );
        order.remove(probe_at);
        assert!(
            order.iter().copied().eq(0..N),
            "batch fired out of deadline order, or items lost or duplicated"
        );

        tx.send(TimerCmd::Shutdown).expect("timer thread alive");
        handle.join().expect("timer thread exits cleanly");
        assert_eq!(
            fired_rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        );
    }
}
