//! The lab hosts' heartbeats, on networks that others can write to. Each
//! lab host runs a host agent (`serve`: a thread bound in a simulated
//! host's namespace, or `migsuite host-agent` on a real host) that tells the
//! failure monitor every `INTERVAL` whether the host is alive or going
//! down, and takes the runner's order to announce going down (the injected
//! failure) or to stay up. Every datagram carries a sequence number and an
//! HMAC-SHA256 under the lab's key: without the key (a guest, anyone on the
//! LAN) a warning or an order can be neither forged nor played back. Every
//! heartbeat names the last order its agent obeyed, so the monitor takes
//! only the answer to its own order, never one queued or captured before.
//! The agents also take the tasks of the migration network's measurement
//! (`crate::probe`), answered to the monitor the same way.

use crate::probe;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a host agent takes the runner's orders.
pub const AGENT_PORT: u16 = 7003;
/// How often a host agent says how its host is.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// A message further than this from the receiver's clock is refused: with
/// the sequence check, nothing recorded can be played back later. Lab hosts'
/// clocks must agree within it (NTP does).
const FRESH: Duration = Duration::from_secs(30);
/// MSH1 heartbeats named no order: the version is in the magic, so the two
/// never mix.
const MAGIC: [u8; 4] = *b"MSH2";
const MAC_LEN: usize = 32;
/// The shortest key `Key::load` takes.
const KEY_LEN: usize = 32;
/// The longest: a key file is a few bytes, not whatever a path names.
const KEY_MAX: u64 = 4096;
/// The most a sealed message's fields hold: with the longest host name,
/// the message fits `DATAGRAM`.
pub const MAX_FIELDS: usize = 512;
/// A receiver's buffer: the longest sealed message.
const DATAGRAM: usize = 1024;

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
    /// Runner to host agent: a task of the migration network's
    /// measurement (fields: `probe::Order`).
    Probe,
    /// Host agent to runner: where that task is (fields: `probe::Answer`).
    Probed,
    /// Sending agent to receiving agent: the first frame of a
    /// measurement's connection (fields: the measurement's token).
    Stream,
}

impl Say {
    fn byte(self) -> u8 {
        match self {
            Say::Alive => 0,
            Say::GoingDown => 1,
            Say::GoDown => 2,
            Say::StayUp => 3,
            Say::Probe => 4,
            Say::Probed => 5,
            Say::Stream => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Say> {
        use Say::*;
        [Alive, GoingDown, GoDown, StayUp, Probe, Probed, Stream]
            .into_iter()
            .find(|s| s.byte() == b)
    }

    fn is_order(self) -> bool {
        matches!(self, Say::GoDown | Say::StayUp | Say::Probe)
    }

    /// What an agent's heartbeats say once it obeyed this order; None if
    /// the order is not about its heartbeats.
    fn heartbeat(self) -> Option<Say> {
        match self {
            Say::GoDown => Some(Say::GoingDown),
            Say::StayUp => Some(Say::Alive),
            _ => None,
        }
    }
}

/// What a datagram says, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub say: Say,
    /// The sender's sequence number.
    pub seq: u64,
    /// A heartbeat's: the seq of the last order its agent obeyed (0 before
    /// any); an answer's: the order it answers; an order's: 0.
    pub answers: u64,
    /// The host it is from or for.
    pub host: String,
    /// What else it says, in a form its kind defines (empty for
    /// heartbeats and the orders to go down and stay up).
    pub fields: Vec<u8>,
}

/// The lab's heartbeat key, shared by the runner and the host agents.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// A new random key: a simulated lab's, whose agents are this process's.
    pub fn random() -> Result<Key> {
        let mut bytes = vec![0u8; KEY_LEN];
        random(&mut bytes)?;
        Ok(Key(bytes))
    }

    /// A real lab's key: a regular file of 32 bytes to 4 KiB (e.g. `head
    /// -c 32 /dev/urandom`), owned by this user and readable by no one
    /// else, in directories no one else can replace it in. It is opened
    /// once, without following a link or waiting on a FIFO, and judged by
    /// what is open, so it cannot be swapped between the check and the read.
    pub fn load(path: &Path) -> Result<Key> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let named = || format!("the heartbeat key {}", path.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("{} (opened without following a symbolic link)", named()))?;
        let meta = file.metadata().with_context(named)?;
        if !meta.file_type().is_file() {
            bail!(
                "{} is not a regular file: give a file made with `head -c {KEY_LEN} /dev/urandom`",
                named()
            );
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid || meta.mode() & 0o077 != 0 {
            bail!(
                "{} is owned by uid {} with mode {:o}: it must be owned by uid {euid} and \
                 readable by no one else (chmod 600)",
                named(),
                meta.uid(),
                meta.mode() & 0o777
            );
        }
        if meta.len() > KEY_MAX {
            bail!(
                "{} has {} bytes, more than {KEY_MAX}: a key is {KEY_LEN} random bytes",
                named(),
                meta.len()
            );
        }
        replaceable_by_others(path).map_or(Ok(()), |why| bail!("{}: {why}", named()))?;
        let mut bytes = Vec::new();
        file.take(KEY_MAX + 1)
            .read_to_end(&mut bytes)
            .with_context(named)?;
        if bytes.len() < KEY_LEN {
            bail!(
                "{} has {} bytes, fewer than {KEY_LEN} (make one with `head -c {KEY_LEN} \
                 /dev/urandom`)",
                named(),
                bytes.len()
            );
        }
        Ok(Key(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Why another user could put another file at `path`: a directory on its
/// way that someone else owns or may write in (unless sticky, where no one
/// may rename or remove another's entries); None if no one can.
fn replaceable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = match parent.canonicalize() {
        Ok(dir) => dir,
        Err(e) => return Some(format!("its directory {}: {e}", parent.display())),
    };
    dir.ancestors().find_map(|d| {
        let meta = match std::fs::metadata(d) {
            Ok(meta) => meta,
            Err(e) => return Some(format!("{}: {e}", d.display())),
        };
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.uid() != euid && meta.uid() != 0 {
            Some(format!(
                "directory {} is owned by uid {}, who could replace the key",
                d.display(),
                meta.uid()
            ))
        } else if meta.mode() & 0o022 != 0 && !sticky {
            Some(format!(
                "directory {} has mode {:o}: others may replace the key in it (chmod go-w)",
                d.display(),
                meta.mode() & 0o7777
            ))
        } else {
            None
        }
    })
}

/// `say` from or for host `host`, numbered `seq`, answering the order
/// numbered `answers`, with `fields` (at most `MAX_FIELDS` bytes), sealed
/// with `key`: magic, what it says, seq, answers, the host's name (length
/// first), the fields, then the MAC of all that. Without fields it is the
/// same datagram as before fields existed.
pub fn seal(key: &Key, say: Say, seq: u64, answers: u64, host: &str, fields: &[u8]) -> Vec<u8> {
    let name = &host.as_bytes()[..host.len().min(255)];
    let mut b = MAGIC.to_vec();
    b.push(say.byte());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&answers.to_le_bytes());
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(&fields[..fields.len().min(MAX_FIELDS)]);
    let mut mac = key.mac();
    mac.update(&b);
    b.extend_from_slice(&mac.finalize().into_bytes());
    b
}

/// What a datagram sealed with `key` says; None if it is not one (forged,
/// damaged, sealed with another key, or of another version).
pub fn open(key: &Key, b: &[u8]) -> Option<Message> {
    let body = b.get(..b.len().checked_sub(MAC_LEN)?)?;
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&b[body.len()..]).ok()?;
    if body.get(..4)? != MAGIC {
        return None;
    }
    let say = Say::from_byte(*body.get(4)?)?;
    let u64_at = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
    let (seq, answers) = (u64_at(5)?, u64_at(13)?);
    let len = usize::from(*body.get(21)?);
    let host = std::str::from_utf8(body.get(22..22 + len)?).ok()?;
    Some(Message {
        say,
        seq,
        answers,
        host: host.to_string(),
        fields: body[22 + len..].to_vec(),
    })
}

/// Fills `buf` from the kernel's random source.
pub fn random(buf: &mut [u8]) -> Result<()> {
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, buf)?;
    Ok(())
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

/// The runner's side: sends orders to host agents, hears their heartbeats.
pub struct Monitor {
    socket: UdpSocket,
    key: Key,
    seq: Mutex<Sequence>,
    /// For as long as the monitor listens: a heartbeat taken in one call is
    /// refused in every later one.
    replay: Mutex<Replay>,
}

/// What the monitor heard from a host: its authenticated answer to the
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

impl Monitor {
    /// Hears heartbeats on `socket` (bound to the monitor's address).
    pub fn new(socket: UdpSocket, key: Key) -> Result<Monitor> {
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(Monitor {
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
pub(crate) mod loopback {
    use super::*;
    use std::sync::Arc;

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

    /// A monitor on loopback and a socket playing a host's agent, whose
    /// answers a test writes itself.
    pub struct Scripted {
        pub key: Key,
        pub monitor: Monitor,
        /// Where the monitor listens: the agent answers there.
        pub to: SocketAddr,
        pub agent: UdpSocket,
    }

    impl Scripted {
        pub fn new() -> Scripted {
            let key = Key::random().unwrap();
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = socket.local_addr().unwrap();
            let monitor = Monitor::new(socket, key.clone()).unwrap();
            let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
            agent
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Scripted {
                key,
                monitor,
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

        /// Sends the monitor `say`, the agent's `seq`-th datagram, as host
        /// `host`, answering order `answers`.
        pub fn say(&self, say: Say, seq: u64, answers: u64, host: &str, fields: &[u8]) {
            let sealed = seal(&self.key, say, seq, answers, host, fields);
            self.agent.send_to(&sealed, self.to).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_only_with_its_key_and_intact() {
        let (key, other) = (Key::random().unwrap(), Key::random().unwrap());
        let sealed = seal(&key, Say::GoingDown, 42, 41, "a", b"fields");
        let message = Message {
            say: Say::GoingDown,
            seq: 42,
            answers: 41,
            host: "a".into(),
            fields: b"fields".to_vec(),
        };
        assert_eq!(open(&key, &sealed), Some(message));
        assert_eq!(open(&other, &sealed), None);
        for i in 0..sealed.len() {
            let mut bent = sealed.clone();
            bent[i] ^= 1;
            assert_eq!(open(&key, &bent), None, "byte {i} changed");
        }
        assert_eq!(open(&key, b"going-down"), None);
        assert_eq!(open(&key, &[]), None);
        // MSH1, sealed with the right key: it names no order.
        let mut old = b"MSH1\x01".to_vec();
        old.extend_from_slice(&42u64.to_le_bytes());
        old.extend_from_slice(b"\x01a");
        let mut mac = key.mac();
        mac.update(&old);
        old.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(open(&key, &old), None);
    }

    /// Heartbeats and the orders to go down and stay up carry no fields:
    /// they are the datagrams agents and runners sent before fields existed.
    #[test]
    fn a_message_without_fields_is_as_before_fields_existed() {
        let key = Key::random().unwrap();
        let mut before = b"MSH2\x01".to_vec();
        before.extend_from_slice(&42u64.to_le_bytes());
        before.extend_from_slice(&41u64.to_le_bytes());
        before.extend_from_slice(b"\x01a");
        let mut mac = key.mac();
        mac.update(&before);
        before.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(seal(&key, Say::GoingDown, 42, 41, "a", &[]), before);
        let long = seal(&key, Say::GoingDown, 42, 41, "a", &[7; 2 * MAX_FIELDS]);
        assert_eq!(open(&key, &long).unwrap().fields.len(), MAX_FIELDS);
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
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let err = Key::load(&path).err().unwrap().to_string();
        assert!(err.contains("more than 4096"), "{err}");
    }

    #[test]
    fn a_key_that_is_a_link_a_fifo_or_replaceable_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let err = format!("{:#}", Key::load(&link).err().unwrap());
        assert!(err.contains("without following a symbolic link"), "{err}");
        // A FIFO would block a plain open until someone writes to it.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = Key::load(&fifo).err().unwrap().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        let err = Key::load(Path::new("/dev/zero")).err().unwrap().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Key::load(&key).err().unwrap().to_string();
        assert!(err.contains("others may replace the key in it"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            Key::load(&key).is_ok(),
            "a sticky directory keeps others' hands off"
        );
    }

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
        let monitor = Monitor::new(agent.monitor.try_clone().unwrap(), key).unwrap();
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
        let monitor = Monitor::new(agent.monitor.try_clone().unwrap(), key.clone()).unwrap();
        let timeout = Duration::from_secs(5);
        let first = monitor.bring_down("a", agent.orders, timeout).unwrap();
        assert!(first.answers >= first.first_order);
        let captured = capture(&key, &agent.monitor, Say::GoingDown);
        let up = monitor.stand_up("a", agent.orders, timeout).unwrap();
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
            let heard = monitor.bring_down("a", agent.orders, timeout);
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
        let monitor = Monitor::new(agent.monitor.try_clone().unwrap(), key).unwrap();
        let timeout = Duration::from_secs(5);
        let first = monitor.bring_down("a", agent.orders, timeout).unwrap();
        std::thread::sleep(5 * INTERVAL);
        let second = monitor.bring_down("a", agent.orders, timeout).unwrap();
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
            lab.monitor
                .bring_down("a", lab.orders(), Duration::from_secs(5))
        })
        .unwrap();
        assert_eq!(heard.answers, heard.first_order);
    }
}
