//! The open-loop form of a round (`--rate`): requests arrive at a fixed rate
//! whatever the side's speed, each in a task of its own (as a server spawns
//! one per request), and a request's latency counts from the moment it was
//! due, not from when it got to run. A closed loop lets a fast side saturate
//! its cores and then charges its misses for the queueing it caused; here
//! every side meets the same traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::sides::Peer;
use super::zipf::Zipf;
use super::RoundFigures;
use crate::report::{latency_histogram, Rng};

/// How often the arrival thread hands the requests that fell due to the
/// runtime: the resolution of the arrival schedule.
const ARRIVAL_TICK: Duration = Duration::from_micros(25);
/// Requests in flight beyond which new arrivals are turned away (counted as
/// errors): a side that cannot keep up must not grow without bound.
const MAX_IN_FLIGHT: u64 = 100_000;

/// Offer `rate` requests per second to `peer` for `duration`.
pub(super) async fn drive_open<P: Peer>(
    peer: &Arc<P>,
    zipf: &Arc<Zipf>,
    rate: u64,
    duration: Duration,
    seed: u64,
) -> Result<RoundFigures> {
    let loads_before = peer.loads();
    let hist = Arc::new(Mutex::new(latency_histogram()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Handle::current();
    let started = Instant::now();
    let arrivals = {
        let (peer, zipf, hist) = (Arc::clone(peer), Arc::clone(zipf), Arc::clone(&hist));
        let (in_flight, errors) = (Arc::clone(&in_flight), Arc::clone(&errors));
        // A thread of its own: arrivals must not wait for the runtime they load.
        std::thread::spawn(move || {
            // Sleep as asked: the kernel's default slack (50 µs) would make
            // every tick three times longer.
            // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only
            // this thread's timer slack.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
            let mut rng = Rng::new(seed.wrapping_mul(1_000_003));
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut sent = 0u64;
            loop {
                let now = Instant::now();
                if now >= started + duration {
                    break;
                }
                while started + interval * (sent as u32) <= now {
                    let due = started + interval * (sent as u32);
                    sent += 1;
                    if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let id = zipf.sample(&mut rng);
                    let (peer, hist) = (Arc::clone(&peer), Arc::clone(&hist));
                    let (in_flight, errors) = (Arc::clone(&in_flight), Arc::clone(&errors));
                    runtime.spawn(async move {
                        if peer.fetch(id).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let took = due.elapsed().as_nanos().max(1) as u64;
                        hist.lock().unwrap().saturating_record(took);
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                std::thread::sleep(ARRIVAL_TICK);
            }
        })
    };
    tokio::task::spawn_blocking(move || arrivals.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the arrival thread panicked"))?;
    // Let the requests in flight finish, within reason.
    let drain_until = Instant::now() + Duration::from_secs(10);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hist = hist.lock().unwrap();
    Ok(RoundFigures::from_latencies(
        &hist,
        started.elapsed(),
        peer.loads() - loads_before,
        errors.load(Ordering::Relaxed),
    ))
}
