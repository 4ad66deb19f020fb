//! The one datagram format between the runner and the host agents: what
//! it says, from or for which host, its sequence number and the order it
//! answers, sealed with the lab's key; and the key itself, and the guard
//! against play-back.

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
pub(super) const DATAGRAM: usize = 1024;

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

    pub(super) fn is_order(self) -> bool {
        matches!(self, Say::GoDown | Say::StayUp | Say::Probe)
    }

    /// What an agent's heartbeats say once it obeyed this order; None if
    /// the order is not about its heartbeats.
    pub(super) fn heartbeat(self) -> Option<Say> {
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
}
