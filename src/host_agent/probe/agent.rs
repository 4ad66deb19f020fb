//! A host agent's tasks of the measurement. Each order is answered at once
//! with where its task is; receiving and sending run on threads of their
//! own, so the agent's heartbeats go on meanwhile.

use super::{Answer, Counted, Measured, Order, State, Task, Token};
use crate::goodput;
use crate::host_agent::sealed::{open, seal, Key, Replay, Say, Sequence};
use crate::netdev;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest each of an agent's own waits lasts: for its port (an
/// abandoned measurement's receiver holds it until its own wait ends), for
/// the connection, and for the connection's opening frame.
pub const WAIT: Duration = Duration::from_secs(5);
/// An opening frame is a sealed token: far less than this.
const MAX_OPENING: usize = 1024;

/// A host agent's tasks: the last one started, answered for until the
/// next.
pub struct Tasks {
    name: String,
    key: Key,
    current: Option<(Token, Arc<Mutex<State>>)>,
}

impl Tasks {
    /// Host `name`'s, sealing with `key`.
    pub fn new(name: &str, key: &Key) -> Tasks {
        Tasks {
            name: name.to_string(),
            key: key.clone(),
            current: None,
        }
    }

    /// The answer to an order with `fields`; None if they name no task.
    pub fn answer(&mut self, fields: &[u8]) -> Option<Answer> {
        let (token, task) = Order::decode(fields)?;
        let state = match task {
            None => State::Failed(format!(
                "host {}'s agent cannot read the order: its migsuite is older than the \
                 runner's; give the hosts the runner's",
                self.name
            )),
            Some(Task::Count { address }) => count(address),
            Some(Task::Describe) => describe(),
            // Long enough (a few windows) to run on a thread of its own.
            Some(Task::Pace) => self.start(token, |_, _, _| {
                Ok(State::Paced {
                    mops: crate::cpu_pace::measure(),
                })
            }),
            Some(Task::Receive { at }) => self.start(token, move |key, _, state| {
                receive(key, at, token, state).map(State::Measured)
            }),
            Some(Task::Send { from, to }) => self.start(token, move |key, name, state| {
                send(key, name, from, to, token, state).map(|()| State::Sent)
            }),
        };
        Some(Answer { token, state })
    }

    /// Where the task named `token` is; if it is new, `work` starts on a
    /// thread of its own, given the agent's key and name and the state it
    /// moves along.
    fn start(
        &mut self,
        token: Token,
        work: impl FnOnce(&Key, &str, &Mutex<State>) -> Result<State> + Send + 'static,
    ) -> State {
        // The runner asks again until the task is where it waits for.
        if let Some((current, state)) = &self.current {
            if *current == token {
                return lock(state).clone();
            }
        }
        let state = Arc::new(Mutex::new(State::Starting));
        let (key, name, moved) = (self.key.clone(), self.name.clone(), state.clone());
        std::thread::spawn(move || {
            let end = work(&key, &name, &moved);
            *lock(&moved) = end.unwrap_or_else(|e| State::Failed(format!("{e:#}")));
        });
        self.current = Some((token, state));
        State::Starting
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's kernel release.
fn describe() -> State {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) => State::Described {
            kernel: release.trim().to_string(),
        },
        Err(e) => State::Failed(format!("reading the kernel release: {e}")),
    }
}

/// The counters of the interface that has `address`.
fn count(address: IpAddr) -> State {
    let counted = netdev::interface_of(address).and_then(|interface| {
        Ok(Counted {
            counters: netdev::counters(&interface)?,
            interface,
        })
    });
    counted.map_or_else(|e| State::Failed(format!("{e:#}")), State::Counted)
}

/// Accepts one connection at `at` that opens with `token`, and counts what
/// it carries, and what the interface that has `at` counts meanwhile.
fn receive(key: &Key, at: SocketAddr, token: Token, state: &Mutex<State>) -> Result<Measured> {
    let interface = netdev::interface_of(at.ip())?;
    let listener = listen(at)?;
    *lock(state) = State::Listening;
    let mut stream = accept_opened(&listener, key, token)?;
    // One connection: nothing else gets in.
    drop(listener);
    let window = goodput::receive(&mut stream, || netdev::counters(&interface))
        .with_context(|| format!("receiving at {at}"))?;
    Ok(Measured {
        bytes: window.bytes,
        elapsed: window.elapsed,
        counted: window.closed.since(window.opened),
        interface,
    })
}

fn listen(at: SocketAddr) -> Result<TcpListener> {
    let until = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(at) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50))
            }
            bound => return bound.with_context(|| format!("listening at {at}")),
        }
    }
}

/// The first connection to `listener` within `WAIT` that opens with
/// `token`; the others are dropped.
fn accept_opened(listener: &TcpListener, key: &Key, token: Token) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let until = Instant::now() + WAIT;
    let mut dropped = BTreeSet::new();
    while Instant::now() < until {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream.set_nonblocking(false)?;
                if opens_with(&mut stream, key, token, until) {
                    return Ok(stream);
                }
                dropped.insert(from.ip().to_string());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e).context("accepting the measurement's connection"),
        }
    }
    let dropped = match dropped.is_empty() {
        true => String::new(),
        false => format!(
            " (dropped connections from {} that did not)",
            dropped.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    bail!(
        "no connection to {} opened with the measurement's sealed token within {WAIT:?}{dropped}",
        listener.local_addr()?
    )
}

/// The first bytes of a measurement's connection: `token`, sealed by host
/// `from`, its length first.
fn opening(key: &Key, from: &str, token: Token) -> Vec<u8> {
    let sealed = seal(
        key,
        Say::Stream,
        Sequence::default().advance(),
        0,
        from,
        &token.0,
    );
    [&(sealed.len() as u16).to_le_bytes()[..], &sealed].concat()
}

/// Whether `stream` opens, by `until`, with `token` sealed with `key`,
/// fresh.
fn opens_with(stream: &mut TcpStream, key: &Key, token: Token, until: Instant) -> bool {
    let mut len = [0u8; 2];
    if read_by(stream, &mut len, until).is_err() {
        return false;
    }
    let len = usize::from(u16::from_le_bytes(len));
    let mut sealed = vec![0u8; len.min(MAX_OPENING)];
    if len > MAX_OPENING || read_by(stream, &mut sealed, until).is_err() {
        return false;
    }
    open(key, &sealed).is_some_and(|m| {
        m.say == Say::Stream && m.fields == token.0 && Replay::default().accept(&m.host, m.seq)
    })
}

/// Fills `buf` from `stream`, or fails once `until` has passed: a peer
/// that sends slowly does not stretch the wait.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], until: Instant) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[got..])? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(())
}

/// Connects from `from` to `to`, opens with `token`, and sends until the
/// receiver closes.
fn send(
    key: &Key,
    name: &str,
    from: IpAddr,
    to: SocketAddr,
    token: Token,
    state: &Mutex<State>,
) -> Result<()> {
    let mut stream =
        connect(from, to).with_context(|| format!("connecting from {from} to {to}"))?;
    stream.write_all(&opening(key, name, token))?;
    *lock(state) = State::Sending;
    goodput::send(stream);
    Ok(())
}

/// A TCP connection from `from` to `to`, within `WAIT`. Bound to `from`
/// before it connects, so that it starts where the inventory says the
/// migration network is, or fails.
fn connect(from: IpAddr, to: SocketAddr) -> Result<TcpStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use nix::sys::time::{TimeVal, TimeValLike};
    use std::os::fd::AsRawFd;
    let family = match from {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // connect() gives up after the send timeout, with EINPROGRESS.
    let wait = TimeVal::milliseconds(WAIT.as_millis() as i64);
    socket::setsockopt(&fd, sockopt::SendTimeout, &wait)?;
    let here = SockaddrStorage::from(SocketAddr::new(from, 0));
    socket::bind(fd.as_raw_fd(), &here).with_context(|| format!("binding to {from}"))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Err(Errno::EINPROGRESS) => bail!("no answer within {WAIT:?}"),
        connected => connected?,
    }
    Ok(TcpStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netdev::Counters;

    /// A port of 127.0.0.1 that nothing listens on now.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// What `tasks` answers to `order`, asked again until `done` takes it
    /// or it failed.
    fn until(tasks: &mut Tasks, order: &Order, done: impl Fn(&State) -> bool) -> State {
        let deadline = Instant::now() + 3 * WAIT;
        loop {
            let answer = tasks.answer(&order.encode()).unwrap();
            assert_eq!(answer.token, order.token);
            if done(&answer.state) || matches!(answer.state, State::Failed(_)) {
                return answer.state;
            }
            assert!(Instant::now() < deadline, "still {:?}", answer.state);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn receive_at(at: SocketAddr) -> Order {
        Order {
            token: Token::random().unwrap(),
            task: Task::Receive { at },
        }
    }

    #[test]
    fn a_receiver_measures_what_a_sender_sends_with_its_token() {
        let key = Key::random().unwrap();
        let (mut a, mut b) = (Tasks::new("a", &key), Tasks::new("b", &key));
        let at = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let receive = receive_at(at);
        let listening = until(&mut b, &receive, |s| *s == State::Listening);
        assert_eq!(listening, State::Listening);
        let send = Order {
            token: receive.token,
            task: Task::Send {
                from: at.ip(),
                to: at,
            },
        };
        let sending = until(&mut a, &send, |s| matches!(s, State::Sending | State::Sent));
        assert!(
            matches!(sending, State::Sending | State::Sent),
            "{sending:?}"
        );
        let State::Measured(measured) =
            until(&mut b, &receive, |s| matches!(s, State::Measured(_)))
        else {
            panic!("not measured");
        };
        assert_eq!(measured.interface, "lo");
        assert!(measured.bytes > 0 && measured.elapsed >= goodput::MEASURE);
        assert!(measured.counted.rx > 0, "{measured:?}");
        // Asked again, the same task answers the same.
        let again = b.answer(&receive.encode()).unwrap().state;
        assert_eq!(again, State::Measured(measured));
        assert_eq!(until(&mut a, &send, |s| *s == State::Sent), State::Sent);
    }

    /// Nothing without the lab's key and the measurement's token is
    /// measured: a connection that opens otherwise is dropped, and the
    /// receiver gives up after `WAIT`, saying so.
    #[test]
    fn a_connection_without_the_token_is_dropped() {
        let key = Key::random().unwrap();
        let mut b = Tasks::new("b", &key);
        let at = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let receive = receive_at(at);
        until(&mut b, &receive, |s| *s == State::Listening);
        let other_key = Key::random().unwrap();
        let stale = {
            let seq = Sequence::default().advance() - 60_000_000_000;
            let sealed = seal(&key, Say::Stream, seq, 0, "a", &receive.token.0);
            [&(sealed.len() as u16).to_le_bytes()[..], &sealed].concat()
        };
        let openings = [
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            opening(&other_key, "a", receive.token),
            opening(&key, "a", Token::random().unwrap()),
            stale,
            // An order is no opening, even with the token in it.
            {
                let order = seal(&key, Say::Probe, 1, 0, "a", &receive.token.0);
                [&(order.len() as u16).to_le_bytes()[..], &order].concat()
            },
        ];
        for opening in openings {
            let mut stream = TcpStream::connect(at).unwrap();
            stream.write_all(&opening).unwrap();
            let _ = stream.write_all(&[0x5a; 4096]);
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            // Closed on it: nothing to read, or reset.
            assert!(!matches!(stream.read(&mut [0u8; 16]), Ok(n) if n > 0));
            assert_eq!(b.answer(&receive.encode()).unwrap().state, State::Listening);
        }
        let State::Failed(why) = until(&mut b, &receive, |_| false) else {
            unreachable!()
        };
        assert!(
            why.contains("opened with the measurement's sealed token within 5s")
                && why.contains("dropped connections from 127.0.0.1"),
            "{why}"
        );
    }

    #[test]
    fn a_sender_with_no_receiver_fails_saying_where_it_connected() {
        let key = Key::random().unwrap();
        let mut a = Tasks::new("a", &key);
        let to = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let send = Order {
            token: Token::random().unwrap(),
            task: Task::Send { from: to.ip(), to },
        };
        let State::Failed(why) = until(&mut a, &send, |_| false) else {
            unreachable!()
        };
        assert!(
            why.contains(&format!("connecting from 127.0.0.1 to {to}")),
            "{why}"
        );
    }

    #[test]
    fn a_receiver_at_an_address_not_its_own_fails_saying_so() {
        let key = Key::random().unwrap();
        let mut b = Tasks::new("b", &key);
        let receive = receive_at("192.0.2.77:7004".parse().unwrap());
        let State::Failed(why) = until(&mut b, &receive, |_| false) else {
            unreachable!()
        };
        assert!(
            why.contains("no interface of this host has the address 192.0.2.77"),
            "{why}"
        );
    }

    #[test]
    fn an_agent_counts_the_interface_that_has_an_address() {
        let key = Key::random().unwrap();
        let mut a = Tasks::new("a", &key);
        let count = |address: &str| Order {
            token: Token::random().unwrap(),
            task: Task::Count {
                address: address.parse().unwrap(),
            },
        };
        let State::Counted(counted) = a.answer(&count("127.0.0.1").encode()).unwrap().state else {
            panic!("not counted");
        };
        assert_eq!(counted.interface, "lo");
        assert_ne!(counted.counters, Counters::default());
        let answer = a.answer(&count("192.0.2.77").encode()).unwrap();
        assert!(matches!(answer.state, State::Failed(_)), "{answer:?}");
    }

    #[test]
    fn an_order_it_cannot_read_is_answered_as_such() {
        let key = Key::random().unwrap();
        let mut a = Tasks::new("a", &key);
        let token = Token::random().unwrap();
        let answer = a.answer(&[&token.0[..], &[9]].concat()).unwrap();
        assert_eq!(answer.token, token);
        let State::Failed(why) = answer.state else {
            panic!("{answer:?}");
        };
        assert!(why.contains("older than the runner's"), "{why}");
        assert_eq!(a.answer(&[1; 8]), None);
    }
}
