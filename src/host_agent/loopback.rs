//! Host agents on this machine's loopback, for tests.

use super::sealed::{open, seal, Key, Message, Say};
use super::{serve, Agents};
use anyhow::Result;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Host `name`'s agent on this machine's loopback, sending its
/// heartbeats to `monitor` and taking orders at `orders`, until stopped.
pub struct Agent {
    pub orders: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Agent {
    pub fn start(name: &str, key: &Key, monitor: SocketAddr) -> Agent {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let orders = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, key, name) = (stop.clone(), key.clone(), name.to_string());
            std::thread::spawn(move || serve(&name, &key, &socket, monitor, &stop))
        };
        Agent {
            orders,
            stop,
            thread,
        }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap();
    }
}

/// The runner's `Agents` on loopback and a socket playing a host's agent, whose
/// answers a test writes itself.
pub struct Scripted {
    pub key: Key,
    pub agents: Agents,
    /// Where the runner listens: the agent answers there.
    pub to: SocketAddr,
    pub agent: UdpSocket,
}

impl Scripted {
    pub fn new() -> Scripted {
        let key = Key::random().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let agents = Agents::new(socket, key.clone()).unwrap();
        let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
        agent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Scripted {
            key,
            agents,
            to,
            agent,
        }
    }

    /// Where the agent takes orders.
    pub fn orders(&self) -> SocketAddr {
        self.agent.local_addr().unwrap()
    }

    /// The next order the agent got, opened.
    pub fn order(&self) -> Message {
        let mut buf = [0u8; 1024];
        let n = self.agent.recv(&mut buf).unwrap();
        open(&self.key, &buf[..n]).unwrap()
    }

    /// Sends the runner `say`, the agent's `seq`-th datagram, as host
    /// `host`, answering order `answers`.
    pub fn say(&self, say: Say, seq: u64, answers: u64, host: &str, fields: &[u8]) {
        let sealed = seal(&self.key, say, seq, answers, host, fields);
        self.agent.send_to(&sealed, self.to).unwrap();
    }
}
