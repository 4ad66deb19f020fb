//! A host agent: the heartbeats of its host, the orders it takes.

use super::probe;
use super::sealed::{open, seal, Key, Replay, Say, Sequence, DATAGRAM};
use super::{AGENT_PORT, INTERVAL};
use anyhow::Result;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The runner's name as a sender of orders.
const RUNNER: &str = "runner";

/// A host agent, until `stop`: tells `monitor` every `INTERVAL` how host
/// `name` is, naming the last order it obeyed, and takes orders sealed for
/// it from `socket`, at once; answers a task of the link's measurement at
/// once, with where it is (`probe::agent`).
pub fn serve(
    name: &str,
    key: &Key,
    socket: &UdpSocket,
    monitor: SocketAddr,
    stop: &AtomicBool,
) -> Result<()> {
    let (mut state, mut seq, mut replay) = (Say::Alive, Sequence::default(), Replay::default());
    let mut obeyed = 0;
    let mut tasks = probe::agent::Tasks::new(name, key);
    let mut next = Instant::now();
    let mut buf = [0u8; DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            // A monitor not listening yet is no reason to stop.
            let _ = socket.send_to(&seal(key, state, seq.advance(), obeyed, name, &[]), monitor);
            next = Instant::now() + INTERVAL;
        }
        let wait = next.saturating_duration_since(Instant::now());
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(order) = open(key, &buf[..n]) else {
            continue;
        };
        // A heartbeat played back here is no order, and must not raise the
        // runner's last seq above its next order's.
        if !order.say.is_order() || order.host != name || !replay.accept(RUNNER, order.seq) {
            continue;
        }
        match order.say.heartbeat() {
            Some(heartbeat) => {
                (state, obeyed) = (heartbeat, order.seq);
                // At once, even if the state is the same: the monitor waits
                // for the answer to this very order (a warning's is time
                // zero).
                next = Instant::now();
            }
            None => {
                if let Some(answer) = tasks.answer(&order.fields) {
                    let answer = seal(
                        key,
                        Say::Probed,
                        seq.advance(),
                        order.seq,
                        name,
                        &answer.encode(),
                    );
                    let _ = socket.send_to(&answer, monitor);
                }
            }
        }
    }
    Ok(())
}

/// Serves as host `name`'s agent, under the key at `key`, taking orders on
/// `listen` and sending heartbeats to `monitor`, until interrupted
/// (`migsuite host-agent` on a real lab's host).
pub fn until_interrupted(
    name: &str,
    key: &Path,
    listen: IpAddr,
    monitor: SocketAddr,
) -> Result<()> {
    let key = Key::load(key)?;
    let socket = UdpSocket::bind((listen, AGENT_PORT))?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed))?;
    eprintln!(
        "host {name}'s agent: orders on {listen}:{AGENT_PORT}, heartbeats to {monitor}, \
         measurements on the migration address the runner gives, TCP {}",
        probe::PORT
    );
    serve(name, &key, &socket, monitor, &stop)
}
