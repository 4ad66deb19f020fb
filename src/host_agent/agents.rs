//! The runner's side: orders to the host agents, their answers heard.

use super::sealed::{open, seal, Key, Message, Replay, Say, Sequence, DATAGRAM};
use super::INTERVAL;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runner's side: sends orders to host agents, hears their heartbeats.
pub struct Agents {
    socket: UdpSocket,
    key: Key,
    seq: Mutex<Sequence>,
    /// For as long as the runner listens: a heartbeat taken in one call is
    /// refused in every later one.
    replay: Mutex<Replay>,
}

/// What the runner heard from a host: its authenticated answer to the
/// orders of one call, and when.
pub struct Heard {
    pub at: Instant,
    /// The seq of the call's first order.
    pub first_order: u64,
    /// The answer's own seq, and the order it answered (the first, or one
    /// sent again since).
    pub seq: u64,
    pub answers: u64,
    /// Where datagrams that were no host's authenticated heartbeat came
    /// from (a guest forging a warning, say), before the answer.
    pub unauthenticated: BTreeSet<IpAddr>,
}

impl Agents {
    /// Hears heartbeats on `socket` (bound to the lab's monitor address).
    pub fn new(socket: UdpSocket, key: Key) -> Result<Agents> {
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(Agents {
            socket,
            key,
            seq: Default::default(),
            replay: Default::default(),
        })
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Sends `say` with `fields` to host `host`'s agent at `agent`;
    /// returns its seq.
    fn order(&self, host: &str, agent: SocketAddr, say: Say, fields: &[u8]) -> Result<u64> {
        let seq = self.seq.lock().unwrap_or_else(|p| p.into_inner()).advance();
        self.socket
            .send_to(&seal(&self.key, say, seq, 0, host, fields), agent)
            .with_context(|| format!("ordering host {host}'s agent at {agent}"))?;
        Ok(seq)
    }

    /// Orders host `host` (agent at `agent`) to go down, until its warning
    /// is heard, or `timeout`.
    pub fn bring_down(&self, host: &str, agent: SocketAddr, timeout: Duration) -> Result<Heard> {
        let going_down = |m: &Message| (m.say == Say::GoingDown).then_some(());
        let (heard, ()) = self.ask(host, agent, Say::GoDown, &[], going_down, timeout)?;
        Ok(heard)
    }

    /// Orders host `host` (agent at `agent`) to stay up, until it is heard
    /// alive again, or `timeout`: once ordered down, an agent announces
    /// going down until told otherwise.
    pub fn stand_up(&self, host: &str, agent: SocketAddr, timeout: Duration) -> Result<Heard> {
        let alive = |m: &Message| (m.say == Say::Alive).then_some(());
        let (heard, ()) = self.ask(host, agent, Say::StayUp, &[], alive, timeout)?;
        Ok(heard)
    }

    /// Sends `order` with `fields` to host `host`'s agent at `agent`, again
    /// every `INTERVAL` (datagrams get lost), until the host's answer to
    /// one of these orders that `wanted` takes is heard (authenticated,
    /// fresh, not played back), or `timeout`; returns it with what
    /// `wanted` made of it.
    pub fn ask<T>(
        &self,
        host: &str,
        agent: SocketAddr,
        order: Say,
        fields: &[u8],
        wanted: impl Fn(&Message) -> Option<T>,
        timeout: Duration,
    ) -> Result<(Heard, T)> {
        let deadline = Instant::now() + timeout;
        let mut unauthenticated = BTreeSet::new();
        let mut buf = [0u8; DATAGRAM];
        // What is queued was sent before these orders and answers none of
        // them: dropped unheeded, but where forgeries came from is told.
        self.socket.set_nonblocking(true)?;
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            if open(&self.key, &buf[..n]).is_none() {
                unauthenticated.insert(from.ip());
            }
        }
        self.socket.set_nonblocking(false)?;
        let first_order = self.order(host, agent, order, fields)?;
        let mut next_order = Instant::now() + INTERVAL;
        while Instant::now() < deadline {
            if Instant::now() >= next_order {
                self.order(host, agent, order, fields)?;
                next_order = Instant::now() + INTERVAL;
            }
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let Some(heard) = open(&self.key, &buf[..n]) else {
                unauthenticated.insert(from.ip());
                continue;
            };
            // Orders' seqs rise (the runner's clock): an answer to an
            // earlier call's order names one below this call's first.
            if heard.host != host || heard.answers < first_order {
                continue;
            }
            let Some(taken) = wanted(&heard) else {
                continue;
            };
            let mut replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
            if replay.accept(host, heard.seq) {
                let heard = Heard {
                    at: Instant::now(),
                    first_order,
                    seq: heard.seq,
                    answers: heard.answers,
                    unauthenticated,
                };
                return Ok((heard, taken));
            }
        }
        bail!("host {host}'s agent at {agent} did not answer {order:?} within {timeout:?}")
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_agent::loopback;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Host `a`'s agent on this machine's loopback, sending its heartbeats
    /// to `monitor` and taking orders at `orders`, until stopped.
    struct LoopbackAgent {
        monitor: UdpSocket,
        orders: SocketAddr,
        agent: loopback::Agent,
    }

    impl LoopbackAgent {
        fn start(key: &Key) -> LoopbackAgent {
            let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
            let agent = loopback::Agent::start("a", key, monitor.local_addr().unwrap());
            LoopbackAgent {
                monitor,
                orders: agent.orders,
                agent,
            }
        }

        fn stop(self) {
            self.agent.stop();
        }
    }

    /// The order brings the warning; a forged one does not count.
    #[test]
    fn an_agent_warns_when_ordered_and_forgeries_are_ignored() {
        let key = Key::random().unwrap();
        let agent = LoopbackAgent::start(&key);
        let to = agent.monitor.local_addr().unwrap();
        let agents = Agents::new(agent.monitor.try_clone().unwrap(), key).unwrap();
        let forger = UdpSocket::bind("127.0.0.2:0").unwrap();
        forger.send_to(b"going-down", to).unwrap();
        // A warning sealed with another key.
        let other = Key::random().unwrap();
        let forged = seal(
            &other,
            Say::GoingDown,
            Sequence::default().advance(),
            0,
            "a",
            &[],
        );
        forger.send_to(&forged, to).unwrap();
        let heard = agents
            .bring_down("a", agent.orders, Duration::from_secs(5))
            .unwrap();
        assert!(
            heard
                .unauthenticated
                .contains(&"127.0.0.2".parse().unwrap()),
            "{:?}",
            heard.unauthenticated
        );
        agent.stop();
    }

    /// What the agent says over the next `window`, as the monitor hears it.
    fn heard(key: &Key, monitor: &UdpSocket, window: Duration) -> Vec<Say> {
        let until = Instant::now() + window;
        let mut says = Vec::new();
        let mut buf = [0u8; 512];
        while Instant::now() < until {
            if let Ok(n) = monitor.recv(&mut buf) {
                says.extend(open(key, &buf[..n]).map(|m| m.say));
            }
        }
        says
    }

    #[test]
    fn an_agent_heeds_no_order_for_another_host_nor_one_played_back() {
        let key = Key::random().unwrap();
        let agent = LoopbackAgent::start(&key);
        let monitor = &agent.monitor;
        monitor
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let runner = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut seq = Sequence::default();
        // Ten heartbeats or more each, so a busy machine does not starve it.
        let window = Duration::from_secs(1);
        runner
            .send_to(
                &seal(&key, Say::GoDown, seq.advance(), 0, "b", &[]),
                agent.orders,
            )
            .unwrap();
        let says = heard(&key, monitor, window);
        assert!(
            !says.is_empty() && says.iter().all(|s| *s == Say::Alive),
            "{says:?}"
        );
        let down = seal(&key, Say::GoDown, seq.advance(), 0, "a", &[]);
        runner.send_to(&down, agent.orders).unwrap();
        assert!(heard(&key, monitor, window).contains(&Say::GoingDown));
        runner
            .send_to(
                &seal(&key, Say::StayUp, seq.advance(), 0, "a", &[]),
                agent.orders,
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        runner.send_to(&down, agent.orders).unwrap();
        let says = heard(&key, monitor, window);
        assert!(
            says.iter().rev().take(2).all(|s| *s == Say::Alive),
            "{says:?}"
        );
        agent.stop();
    }
    /// A datagram the agent sent that says `say`, as heard on `monitor`.
    fn capture(key: &Key, monitor: &UdpSocket, say: Say) -> Vec<u8> {
        let until = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        while Instant::now() < until {
            if let Ok(n) = monitor.recv(&mut buf) {
                if open(key, &buf[..n]).is_some_and(|m| m.say == say) {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("the agent did not say {say:?}");
    }

    /// Two runs against one agent, stood up between them: the second
    /// warning answers the second call's order, and a going-down of the
    /// first run, captured and played back before and during the second
    /// call, is not taken.
    #[test]
    fn a_warning_answers_its_own_order_and_a_captured_one_is_not_taken() {
        let key = Key::random().unwrap();
        let agent = LoopbackAgent::start(&key);
        let to = agent.monitor.local_addr().unwrap();
        let agents = Agents::new(agent.monitor.try_clone().unwrap(), key.clone()).unwrap();
        let timeout = Duration::from_secs(5);
        let first = agents.bring_down("a", agent.orders, timeout).unwrap();
        assert!(first.answers >= first.first_order);
        let captured = capture(&key, &agent.monitor, Say::GoingDown);
        let up = agents.stand_up("a", agent.orders, timeout).unwrap();
        assert!(up.first_order > first.answers && up.answers >= up.first_order);
        let replayer = UdpSocket::bind("127.0.0.1:0").unwrap();
        replayer.send_to(&captured, to).unwrap();
        let done = AtomicBool::new(false);
        let second = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    replayer.send_to(&captured, to).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let heard = agents.bring_down("a", agent.orders, timeout);
            done.store(true, Ordering::Relaxed);
            heard
        })
        .unwrap();
        let captured = open(&key, &captured).unwrap();
        assert!(captured.answers < second.first_order);
        assert!(
            second.answers >= second.first_order && second.seq > captured.seq,
            "took {} answering {}; the second call's first order is {}",
            second.seq,
            second.answers,
            second.first_order
        );
        agent.stop();
    }

    /// An agent still going down when the next call starts (never stood
    /// up): the going-downs it queued on the monitor's socket, answering
    /// the earlier order, are not the warning.
    #[test]
    fn going_downs_queued_before_a_call_are_not_its_warning() {
        let key = Key::random().unwrap();
        let agent = LoopbackAgent::start(&key);
        let agents = Agents::new(agent.monitor.try_clone().unwrap(), key).unwrap();
        let timeout = Duration::from_secs(5);
        let first = agents.bring_down("a", agent.orders, timeout).unwrap();
        std::thread::sleep(5 * INTERVAL);
        let second = agents.bring_down("a", agent.orders, timeout).unwrap();
        assert!(second.first_order > first.answers);
        assert!(
            second.answers >= second.first_order,
            "took {} answering {}; the call's first order is {}",
            second.seq,
            second.answers,
            second.first_order
        );
        agent.stop();
    }

    /// A going-down sent before the agent took the order, arriving after it
    /// went out (fresh, sealed, never taken), is not the warning either.
    #[test]
    fn a_going_down_answering_an_earlier_order_is_not_the_warning() {
        // Host a's agent, scripted: going down since an earlier order, it
        // sends one more going-down answering that before its answer.
        let lab = loopback::Scripted::new();
        let earlier = Sequence::default().advance();
        let heard = std::thread::scope(|s| {
            s.spawn(|| {
                let order = lab.order();
                let mut seq = Sequence::default();
                for answers in [earlier, order.seq] {
                    lab.say(Say::GoingDown, seq.advance(), answers, "a", &[]);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            lab.agents
                .bring_down("a", lab.orders(), Duration::from_secs(5))
        })
        .unwrap();
        assert_eq!(heard.answers, heard.first_order);
    }
}
