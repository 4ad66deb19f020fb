//! A real lab's migration network, measured by its hosts' own agents: the
//! runner sits on no host, so the destination's agent receives and the
//! source's sends, between their migration addresses, as a migration
//! stream would go. The runner orders each agent (`Say::Probe`, sealed and
//! numbered like every order) and the agent answers each order at once
//! with where its task is (`Say::Probed`); the runner asks again until the
//! task is where it waits for. The measurement's connection opens with
//! its token sealed with the lab's key (`Say::Stream`), or the receiver
//! drops it: nothing without the key (a guest, say) is measured as the
//! link. The agents also tell their host's kernel, which libvirt does not.
//! This module is what the orders and answers say; `agent` does the
//! tasks, `ask` is the runner's side.

pub mod agent;
pub mod ask;

use crate::goodput::mbit;
use crate::netdev::Counters;
use anyhow::Result;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Where a receiving agent listens, on its migration address (TCP).
pub const PORT: u16 = 7004;

/// What ties one task's orders, answers and connection together, and
/// keeps an old measurement's from being taken for a new one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub [u8; 16]);

impl Token {
    pub fn random() -> Result<Token> {
        let mut token = Token([0; 16]);
        crate::host_agent::sealed::random(&mut token.0)?;
        Ok(token)
    }
}

/// An agent's task.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    /// Accept one measurement connection at `at` (on the host's migration
    /// address) and count what it carries.
    Receive { at: SocketAddr },
    /// Connect from `from` (the host's migration address, so the stream
    /// takes the migration network) to `to`, and send.
    Send { from: IpAddr, to: SocketAddr },
    /// Read the counters of the interface that has `address`.
    Count { address: IpAddr },
    /// Tell the host's kernel release, which its libvirt does not.
    Describe,
    /// Measure the host's CPU pace (`crate::cpu_pace`).
    Pace,
}

/// What the runner orders an agent: `task`, named `token` (an order
/// repeated with the same token is the same task).
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub token: Token,
    pub task: Task,
}

/// Where a task is.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not yet listening or connected.
    Starting,
    /// Listening: the sender may connect.
    Listening,
    /// Connected, sending.
    Sending,
    Measured(Measured),
    /// Sent until the receiver closed.
    Sent,
    Counted(Counted),
    /// The host's kernel release (`uname -r`).
    Described {
        kernel: String,
    },
    /// The host's CPU pace, million rounds per second.
    Paced {
        mops: f64,
    },
    Failed(String),
}

/// An agent's answer: where the task named `token` is.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub token: Token,
    pub state: State,
}

/// What a receiving agent counted over its window: the payload, the
/// window's length, and what its interface counted meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub bytes: u64,
    pub elapsed: Duration,
    pub interface: String,
    pub counted: Counters,
}

impl Measured {
    pub fn goodput_mbit(&self) -> f64 {
        mbit(self.bytes, self.elapsed)
    }

    /// The rate on the wire it made (frames, headers included), as the
    /// receiver's interface counted it.
    pub fn wire_mbit(&self) -> f64 {
        mbit(self.counted.rx, self.elapsed)
    }
}

/// An interface's counters, and its name.
#[derive(Clone, Debug, PartialEq)]
pub struct Counted {
    pub interface: String,
    pub counters: Counters,
}

impl Order {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(self.token.0.to_vec());
        match &self.task {
            Task::Receive { at } => w.u8(0).socket(*at),
            Task::Send { from, to } => w.u8(1).ip(*from).socket(*to),
            Task::Count { address } => w.u8(2).ip(*address),
            Task::Describe => w.u8(3),
            Task::Pace => w.u8(4),
        };
        w.0
    }

    /// The order's token and, if this agent can read it, its task (an
    /// order from a newer runner it cannot).
    pub fn decode(b: &[u8]) -> Option<(Token, Option<Task>)> {
        let mut r = Reader(b);
        let token = r.token()?;
        let task = match r.u8() {
            Some(0) => r.socket().map(|at| Task::Receive { at }),
            Some(1) => r
                .ip()
                .zip(r.socket())
                .map(|(from, to)| Task::Send { from, to }),
            Some(2) => r.ip().map(|address| Task::Count { address }),
            Some(3) => Some(Task::Describe),
            Some(4) => Some(Task::Pace),
            _ => None,
        };
        Some((token, task.filter(|_| r.0.is_empty())))
    }
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(self.token.0.to_vec());
        match &self.state {
            State::Starting => w.u8(0),
            State::Listening => w.u8(1),
            State::Sending => w.u8(2),
            State::Measured(m) => w
                .u8(3)
                .u64(m.bytes)
                .u64(m.elapsed.as_nanos() as u64)
                .text(&m.interface)
                .u64(m.counted.rx)
                .u64(m.counted.tx),
            State::Sent => w.u8(4),
            State::Counted(c) => w
                .u8(5)
                .text(&c.interface)
                .u64(c.counters.rx)
                .u64(c.counters.tx),
            State::Failed(why) => w.u8(6).text(why),
            State::Described { kernel } => w.u8(7).text(kernel),
            State::Paced { mops } => w.u8(8).u64(mops.to_bits()),
        };
        w.0
    }

    pub fn decode(b: &[u8]) -> Option<Answer> {
        let mut r = Reader(b);
        let token = r.token()?;
        let state = match r.u8()? {
            0 => State::Starting,
            1 => State::Listening,
            2 => State::Sending,
            3 => State::Measured(Measured {
                bytes: r.u64()?,
                elapsed: Duration::from_nanos(r.u64()?),
                interface: r.text()?,
                counted: r.counters()?,
            }),
            4 => State::Sent,
            5 => State::Counted(Counted {
                interface: r.text()?,
                counters: r.counters()?,
            }),
            6 => State::Failed(r.text()?),
            7 => State::Described { kernel: r.text()? },
            8 => State::Paced {
                mops: f64::from_bits(r.u64()?),
            },
            _ => return None,
        };
        r.0.is_empty().then_some(Answer { token, state })
    }
}

/// Fields as written: integers little-endian, an address its family (4 or
/// 6) then its bytes, a text its length (one byte) then UTF-8. The longest
/// answer fits a sealed message's fields (`sealed::MAX_FIELDS`).
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Writer {
        self.0.push(v);
        self
    }

    fn u64(&mut self, v: u64) -> &mut Writer {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn ip(&mut self, ip: IpAddr) -> &mut Writer {
        match ip {
            IpAddr::V4(a) => self.u8(4).0.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => self.u8(6).0.extend_from_slice(&a.octets()),
        }
        self
    }

    fn socket(&mut self, at: SocketAddr) -> &mut Writer {
        self.ip(at.ip())
            .0
            .extend_from_slice(&at.port().to_le_bytes());
        self
    }

    /// At most 255 bytes of `text`, cut where a character starts.
    fn text(&mut self, text: &str) -> &mut Writer {
        let mut cut = text.len().min(255);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.u8(cut as u8)
            .0
            .extend_from_slice(&text.as_bytes()[..cut]);
        self
    }
}

/// Fields as read: None where they end early or say what no writer does.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn token(&mut self) -> Option<Token> {
        self.take().map(Token)
    }

    fn ip(&mut self) -> Option<IpAddr> {
        match self.u8()? {
            4 => self.take().map(|b: [u8; 4]| Ipv4Addr::from(b).into()),
            6 => self.take().map(|b: [u8; 16]| Ipv6Addr::from(b).into()),
            _ => None,
        }
    }

    fn socket(&mut self) -> Option<SocketAddr> {
        let ip = self.ip()?;
        Some(SocketAddr::new(ip, self.take().map(u16::from_le_bytes)?))
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::from(self.u8()?);
        let (text, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(text.to_vec()).ok()
    }

    fn counters(&mut self) -> Option<Counters> {
        Some(Counters {
            rx: self.u64()?,
            tx: self.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_agent::sealed::MAX_FIELDS;

    fn token() -> Token {
        Token::random().unwrap()
    }

    #[test]
    fn orders_read_as_written() {
        let tasks = [
            Task::Receive {
                at: "10.246.0.2:7004".parse().unwrap(),
            },
            Task::Send {
                from: "10.246.0.1".parse().unwrap(),
                to: "[fd00::2]:7004".parse().unwrap(),
            },
            Task::Count {
                address: "fd00::1".parse().unwrap(),
            },
            Task::Describe,
            Task::Pace,
        ];
        for task in tasks {
            let order = Order {
                token: token(),
                task: task.clone(),
            };
            let encoded = order.encode();
            assert_eq!(
                Order::decode(&encoded),
                Some((order.token, Some(task))),
                "{order:?}"
            );
            // Cut short or lengthened, it is no task, but its token is
            // still answered for.
            for bent in [
                &encoded[..encoded.len() - 1],
                &[&encoded[..], &[0]].concat(),
            ] {
                assert_eq!(Order::decode(bent), Some((order.token, None)));
            }
        }
        assert_eq!(Order::decode(&[1; 15]), None, "no token");
        let unknown = [&token().0[..], &[9]].concat();
        assert!(matches!(Order::decode(&unknown), Some((_, None))));
    }

    #[test]
    fn answers_read_as_written() {
        let counters = Counters {
            rx: 1 << 40,
            tx: 77,
        };
        let states = [
            State::Starting,
            State::Listening,
            State::Sending,
            State::Measured(Measured {
                bytes: 117_000_000,
                elapsed: Duration::from_nanos(1_000_123_456),
                interface: "enp0s5".into(),
                counted: counters,
            }),
            State::Sent,
            State::Counted(Counted {
                interface: "mig0".into(),
                counters,
            }),
            State::Failed("no interface of this host has the address 10.246.0.9".into()),
            State::Described {
                kernel: "6.1.0-50-amd64".into(),
            },
            State::Paced { mops: 412.75 },
        ];
        for state in states {
            let answer = Answer {
                token: token(),
                state,
            };
            let encoded = answer.encode();
            assert!(encoded.len() <= MAX_FIELDS);
            assert_eq!(Answer::decode(&encoded).as_ref(), Some(&answer));
            assert_eq!(Answer::decode(&encoded[..encoded.len() - 1]), None);
            assert_eq!(Answer::decode(&[&encoded[..], &[0]].concat()), None);
        }
    }

    /// A reason too long for its field is cut, where a character starts.
    #[test]
    fn a_long_reason_is_cut_to_fit() {
        let answer = Answer {
            token: token(),
            state: State::Failed("é".repeat(1000)),
        };
        let encoded = answer.encode();
        assert!(encoded.len() <= MAX_FIELDS);
        let Some(Answer {
            state: State::Failed(why),
            ..
        }) = Answer::decode(&encoded)
        else {
            panic!("{encoded:?}");
        };
        assert!(!why.is_empty() && why.chars().all(|c| c == 'é'), "{why}");
    }

    #[test]
    fn a_measurement_gives_its_goodput_and_wire_rate() {
        let m = Measured {
            bytes: 125_000_000,
            elapsed: Duration::from_secs(1),
            interface: "mig0".into(),
            counted: Counters {
                rx: 130_000_000,
                tx: 2_000_000,
            },
        };
        assert_eq!((m.goodput_mbit(), m.wire_mbit()), (1000.0, 1040.0));
    }
}
