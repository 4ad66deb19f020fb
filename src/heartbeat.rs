//! The lab hosts' heartbeats, on networks that others can write to. Each
//! lab host runs a host agent (`serve`: a thread bound in a simulated
//! host's namespace, or `migsuite host-agent` on a real host) that tells the
//! failure monitor every `INTERVAL` whether the host is alive or going
//! down, and takes the runner's order to announce going down (the injected
//! failure). Every datagram carries a sequence number and an HMAC-SHA256
//! under the lab's key: without the key (a guest, anyone on the LAN) a
//! warning or an order can be neither forged nor played back.

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a host agent takes the runner's orders.
pub const AGENT_PORT: u16 = 7003;
/// How often a host agent says how its host is.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// A message further than this from the receiver's clock is refused: with
/// the sequence check, nothing recorded can be played back later. Lab hosts'
/// clocks must agree within it (NTP does).
const FRESH: Duration = Duration::from_secs(30);
const MAGIC: [u8; 4] = *b"MSH1";
const MAC_LEN: usize = 32;
/// The shortest key `Key::load` takes.
const KEY_LEN: usize = 32;

/// What a datagram says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    /// Host to monitor: the host is up.
    Alive,
    /// Host to monitor: the host is about to go down (the study's warning).
    GoingDown,
    /// Runner to host agent: announce going down from now on.
    GoDown,
    /// Runner to host agent: announce being alive from now on.
    StayUp,
}

impl Say {
    fn byte(self) -> u8 {
        match self {
            Say::Alive => 0,
            Say::GoingDown => 1,
            Say::GoDown => 2,
            Say::StayUp => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Say> {
        [Say::Alive, Say::GoingDown, Say::GoDown, Say::StayUp]
            .into_iter()
            .find(|s| s.byte() == b)
    }
}

/// The lab's heartbeat key, shared by the runner and the host agents.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// A new random key: a simulated lab's, whose agents are this process's.
    pub fn random() -> Result<Key> {
        let mut bytes = vec![0u8; KEY_LEN];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        Ok(Key(bytes))
    }

    /// A real lab's key: a file of at least 32 bytes (e.g. `head -c 32
    /// /dev/urandom`), owned by this user and readable by no one else.
    pub fn load(path: &Path) -> Result<Key> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("the heartbeat key {}", path.display()))?;
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid || meta.mode() & 0o077 != 0 {
            bail!(
                "the heartbeat key {} is owned by uid {} with mode {:o}: it must be owned by uid \
                 {euid} and readable by no one else (chmod 600)",
                path.display(),
                meta.uid(),
                meta.mode() & 0o777
            );
        }
        let bytes = std::fs::read(path)?;
        if bytes.len() < KEY_LEN {
            bail!(
                "the heartbeat key {} has {} bytes, fewer than {KEY_LEN} (make one with `head -c \
                 {KEY_LEN} /dev/urandom`)",
                path.display(),
                bytes.len()
            );
        }
        Ok(Key(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// `say` from or for host `host`, numbered `seq`, sealed with `key`: magic,
/// what it says, seq, the host's name (length first), then the MAC.
pub fn seal(key: &Key, say: Say, seq: u64, host: &str) -> Vec<u8> {
    let name = &host.as_bytes()[..host.len().min(255)];
    let mut b = MAGIC.to_vec();
    b.push(say.byte());
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    let mut mac = key.mac();
    mac.update(&b);
    b.extend_from_slice(&mac.finalize().into_bytes());
    b
}

/// What a datagram sealed with `key` says, its seq and host; None if it is
/// not one (forged, damaged, or sealed with another key).
pub fn open(key: &Key, b: &[u8]) -> Option<(Say, u64, String)> {
    let body = b.get(..b.len().checked_sub(MAC_LEN)?)?;
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&b[body.len()..]).ok()?;
    if body.get(..4)? != MAGIC {
        return None;
    }
    let say = Say::from_byte(*body.get(4)?)?;
    let seq = u64::from_le_bytes(body.get(5..13)?.try_into().ok()?);
    let len = usize::from(*body.get(13)?);
    let host = std::str::from_utf8(body.get(14..14 + len)?).ok()?;
    (body.len() == 14 + len).then(|| (say, seq, host.to_string()))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A sender's sequence numbers: its clock in ns, strictly increasing.
#[derive(Default)]
pub struct Sequence(u64);

impl Sequence {
    pub fn advance(&mut self) -> u64 {
        self.0 = now_ns().max(self.0 + 1);
        self.0
    }
}

/// A receiver's guard against play-back: per sender, only a seq above the
/// last one taken, and near the receiver's clock.
#[derive(Default)]
pub struct Replay(HashMap<String, u64>);

impl Replay {
    pub fn accept(&mut self, sender: &str, seq: u64) -> bool {
        if u128::from(seq.abs_diff(now_ns())) > FRESH.as_nanos() {
            return false;
        }
        let last = self.0.entry(sender.to_string()).or_default();
        if seq <= *last {
            return false;
        }
        *last = seq;
        true
    }
}

/// The runner's name as a sender of orders.
const RUNNER: &str = "runner";

/// A host agent, until `stop`: tells `monitor` every `INTERVAL` how host
/// `name` is, and takes orders sealed for it from `socket`, at once.
pub fn serve(
    name: &str,
    key: &Key,
    socket: &UdpSocket,
    monitor: SocketAddr,
    stop: &AtomicBool,
) -> Result<()> {
    let (mut state, mut seq, mut replay) = (Say::Alive, Sequence::default(), Replay::default());
    let mut next = Instant::now();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            // A monitor not listening yet is no reason to stop.
            let _ = socket.send_to(&seal(key, state, seq.advance(), name), monitor);
            next = Instant::now() + INTERVAL;
        }
        let wait = next.saturating_duration_since(Instant::now());
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some((say, order_seq, host)) = open(key, &buf[..n]) else {
            continue;
        };
        if host != name || !replay.accept(RUNNER, order_seq) {
            continue;
        }
        let was = state;
        match say {
            Say::GoDown => state = Say::GoingDown,
            Say::StayUp => state = Say::Alive,
            Say::Alive | Say::GoingDown => {}
        }
        if state != was {
            next = Instant::now();
        }
    }
    Ok(())
}

/// The runner's side: sends orders to host agents, hears their heartbeats.
pub struct Monitor {
    socket: UdpSocket,
    key: Key,
    seq: std::sync::Mutex<Sequence>,
}

/// What the monitor heard from a host: its authenticated warning, when.
pub struct Heard {
    pub at: Instant,
    /// Where datagrams that were no host's authenticated heartbeat came
    /// from (a guest forging a warning, say), before the warning.
    pub unauthenticated: std::collections::BTreeSet<std::net::IpAddr>,
}

impl Monitor {
    /// Hears heartbeats on `socket` (bound to the monitor's address).
    pub fn new(socket: UdpSocket, key: Key) -> Result<Monitor> {
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(Monitor {
            socket,
            key,
            seq: Default::default(),
        })
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Sends `say` to host `host`'s agent at `agent`.
    pub fn order(&self, host: &str, agent: SocketAddr, say: Say) -> Result<()> {
        let seq = self.seq.lock().unwrap_or_else(|p| p.into_inner()).advance();
        self.socket
            .send_to(&seal(&self.key, say, seq, host), agent)
            .with_context(|| format!("ordering host {host}'s agent at {agent}"))?;
        Ok(())
    }

    /// Orders host `host` (agent at `agent`) to go down, again every
    /// `INTERVAL` (datagrams get lost), until its authenticated warning is
    /// heard, or `timeout`.
    pub fn bring_down(&self, host: &str, agent: SocketAddr, timeout: Duration) -> Result<Heard> {
        let deadline = Instant::now() + timeout;
        let mut replay = Replay::default();
        let mut unauthenticated = std::collections::BTreeSet::new();
        let mut buf = [0u8; 512];
        let mut next_order = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_order {
                self.order(host, agent, Say::GoDown)?;
                next_order = Instant::now() + INTERVAL;
            }
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            match open(&self.key, &buf[..n]) {
                Some((Say::GoingDown, seq, sender))
                    if sender == host && replay.accept(&sender, seq) =>
                {
                    return Ok(Heard {
                        at: Instant::now(),
                        unauthenticated,
                    });
                }
                Some(_) => {}
                None => {
                    unauthenticated.insert(from.ip());
                }
            }
        }
        bail!("host {host}'s agent at {agent} did not announce going down within {timeout:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_sealed_message_opens_only_with_its_key_and_intact() {
        let (key, other) = (Key::random().unwrap(), Key::random().unwrap());
        let sealed = seal(&key, Say::GoingDown, 42, "a");
        assert_eq!(open(&key, &sealed), Some((Say::GoingDown, 42, "a".into())));
        assert_eq!(open(&other, &sealed), None);
        for i in 0..sealed.len() {
            let mut bent = sealed.clone();
            bent[i] ^= 1;
            assert_eq!(open(&key, &bent), None, "byte {i} changed");
        }
        assert_eq!(open(&key, b"going-down"), None);
        assert_eq!(open(&key, &[]), None);
    }

    #[test]
    fn a_message_is_taken_once_and_only_when_fresh() {
        let mut seq = Sequence::default();
        let (first, second) = (seq.advance(), seq.advance());
        assert!(second > first);
        let mut replay = Replay::default();
        assert!(replay.accept("a", first));
        assert!(!replay.accept("a", first), "played back");
        assert!(
            replay.accept("b", first),
            "another sender's numbers are its own"
        );
        assert!(replay.accept("a", second));
        let stale = second - 2 * FRESH.as_nanos() as u64;
        assert!(!Replay::default().accept("a", stale));
    }

    #[test]
    fn a_key_readable_by_others_or_too_short_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Key::load(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Key::load(&path).is_ok());
        std::fs::write(&path, [7u8; 8]).unwrap();
        let err = Key::load(&path).err().unwrap().to_string();
        assert!(err.contains("fewer than 32"), "{err}");
    }

    /// Host `a`'s agent on this machine's loopback, sending its heartbeats
    /// to `monitor` and taking orders at `orders`, until stopped.
    struct LoopbackAgent {
        monitor: UdpSocket,
        orders: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Result<()>>,
    }

    impl LoopbackAgent {
        fn start(key: &Key) -> LoopbackAgent {
            let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = monitor.local_addr().unwrap();
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let orders = socket.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (stop, key) = (stop.clone(), key.clone());
                std::thread::spawn(move || serve("a", &key, &socket, to, &stop))
            };
            LoopbackAgent {
                monitor,
                orders,
                stop,
                thread,
            }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap().unwrap();
        }
    }

    /// The order brings the warning; a forged one does not count.
    #[test]
    fn an_agent_warns_when_ordered_and_forgeries_are_ignored() {
        let key = Key::random().unwrap();
        let agent = LoopbackAgent::start(&key);
        let to = agent.monitor.local_addr().unwrap();
        let monitor = Monitor::new(agent.monitor.try_clone().unwrap(), key).unwrap();
        let forger = UdpSocket::bind("127.0.0.2:0").unwrap();
        forger.send_to(b"going-down", to).unwrap();
        // A warning sealed with another key.
        let other = Key::random().unwrap();
        let forged = seal(&other, Say::GoingDown, Sequence::default().advance(), "a");
        forger.send_to(&forged, to).unwrap();
        let heard = monitor
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
                says.extend(open(key, &buf[..n]).map(|m| m.0));
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
            .send_to(&seal(&key, Say::GoDown, seq.advance(), "b"), agent.orders)
            .unwrap();
        let says = heard(&key, monitor, window);
        assert!(
            !says.is_empty() && says.iter().all(|s| *s == Say::Alive),
            "{says:?}"
        );
        let down = seal(&key, Say::GoDown, seq.advance(), "a");
        runner.send_to(&down, agent.orders).unwrap();
        assert!(heard(&key, monitor, window).contains(&Say::GoingDown));
        runner
            .send_to(&seal(&key, Say::StayUp, seq.advance(), "a"), agent.orders)
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
}
