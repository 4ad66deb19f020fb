//! The runner's side of the measurement: it orders the agents through its
//! `Agents` and waits, every wait bounded, for each task to get where it
//! needs it.

use super::agent::WAIT;
use super::{Answer, Counted, Measured, Order, State, Task, Token};
use crate::goodput::{MEASURE, WARM_UP};
use crate::host_agent::{Agents, Message, Say};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A host as the measurement needs it: its name, where its agent takes
/// orders, its migration address.
pub struct Peer<'a> {
    pub name: &'a str,
    pub agent: SocketAddr,
    pub migration_address: IpAddr,
}

/// How long a measurement's task may take to get where the runner waits
/// for it: longer than an agent's own waits and a measurement's window
/// together, so that an agent that gave up says why before the runner
/// stops asking.
const MEASURING: Duration = WAIT
    .saturating_mul(2)
    .saturating_add(WARM_UP)
    .saturating_add(MEASURE)
    .saturating_add(Duration::from_secs(3));

/// What the network carries from `from`'s migration address to `to`'s
/// (listening on `port`), as their agents measure it.
pub fn goodput(agents: &Agents, from: &Peer, to: &Peer, port: u16) -> Result<Measured> {
    let at = SocketAddr::new(to.migration_address, port);
    let measured = || -> Result<Measured> {
        let token = Token::random()?;
        let receive = Order {
            token,
            task: Task::Receive { at },
        };
        let listening = |s: &State| (*s == State::Listening).then_some(());
        ask(agents, to, &receive, listening, MEASURING)?;
        let send = Order {
            token,
            task: Task::Send {
                from: from.migration_address,
                to: at,
            },
        };
        let sending = |s: &State| matches!(s, State::Sending | State::Sent).then_some(());
        ask(agents, from, &send, sending, MEASURING)?;
        let measured = |s: &State| match s {
            State::Measured(m) => Some(m.clone()),
            _ => None,
        };
        ask(agents, to, &receive, measured, MEASURING)
    };
    measured().with_context(|| {
        format!(
            "measuring the network from host {} ({}) to host {} ({at})",
            from.name, from.migration_address, to.name
        )
    })
}

/// The counters of `host`'s migration interface, as its agent reads them.
pub fn counters(agents: &Agents, host: &Peer) -> Result<Counted> {
    let count = Order {
        token: Token::random()?,
        task: Task::Count {
            address: host.migration_address,
        },
    };
    let counted = |s: &State| match s {
        State::Counted(c) => Some(c.clone()),
        _ => None,
    };
    // An agent counts at once.
    ask(agents, host, &count, counted, WAIT)
}

/// `host`'s kernel release, as its agent tells it.
pub fn kernel(agents: &Agents, host: &Peer) -> Result<String> {
    let describe = Order {
        token: Token::random()?,
        task: Task::Describe,
    };
    let described = |s: &State| match s {
        State::Described { kernel } => Some(kernel.clone()),
        _ => None,
    };
    ask(agents, host, &describe, described, WAIT)
}

/// `host`'s CPU pace (`crate::cpu_pace`), as its agent measures it.
pub fn cpu_pace(agents: &Agents, host: &Peer) -> Result<f64> {
    let pace = Order {
        token: Token::random()?,
        task: Task::Pace,
    };
    let paced = |s: &State| match s {
        State::Paced { mops } => Some(*mops),
        _ => None,
    };
    ask(agents, host, &pace, paced, WAIT)
}

/// Orders `host`'s agent `order` until its task is where `done` takes it,
/// failed (an error, with the agent's reason), or `timeout`.
fn ask<T>(
    agents: &Agents,
    host: &Peer,
    order: &Order,
    done: impl Fn(&State) -> Option<T>,
    timeout: Duration,
) -> Result<T> {
    let wanted = |m: &Message| {
        let answer =
            Answer::decode(&m.fields).filter(|a| m.say == Say::Probed && a.token == order.token)?;
        match answer.state {
            State::Failed(why) => Some(Err(why)),
            state => done(&state).map(Ok),
        }
    };
    let fields = order.encode();
    let asked = agents.ask(host.name, host.agent, Say::Probe, &fields, wanted, timeout);
    match asked {
        Ok((_, Ok(taken))) => Ok(taken),
        Ok((_, Err(why))) => bail!("host {}'s agent at {}: {why}", host.name, host.agent),
        Err(e) => bail!(
            "{e:#} (an agent of a migsuite older than the runner's ignores these orders: give \
             the hosts the runner's)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_agent::loopback;
    use crate::host_agent::sealed::{open, seal, Key, Sequence};
    use std::net::{TcpListener, UdpSocket};

    /// Hosts a and b's agents on this machine's loopback, and the
    /// runner's `Agents`, hearing their heartbeats and answers.
    struct Lab {
        agents: Agents,
        hosts: [loopback::Agent; 2],
    }

    impl Lab {
        fn start() -> Lab {
            let key = Key::random().unwrap();
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = socket.local_addr().unwrap();
            Lab {
                agents: Agents::new(socket, key.clone()).unwrap(),
                hosts: ["a", "b"].map(|name| loopback::Agent::start(name, &key, to)),
            }
        }

        fn peer(&self, i: usize) -> Peer<'static> {
            Peer {
                name: ["a", "b"][i],
                agent: self.hosts[i].orders,
                migration_address: "127.0.0.1".parse().unwrap(),
            }
        }

        fn stop(self) {
            for agent in self.hosts {
                agent.stop();
            }
        }
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[test]
    fn the_runner_has_two_agents_measure_between_them() {
        let lab = Lab::start();
        let measured = goodput(&lab.agents, &lab.peer(0), &lab.peer(1), free_port()).unwrap();
        assert!(measured.goodput_mbit() > 0.0, "{measured:?}");
        assert!(measured.wire_mbit() > 0.0, "{measured:?}");
        let counted = counters(&lab.agents, &lab.peer(0)).unwrap();
        assert_eq!(counted.interface, "lo");
        let pace = cpu_pace(&lab.agents, &lab.peer(1)).unwrap();
        assert!(pace > 0.0, "{pace}");
        lab.stop();
    }

    /// What the agent answers in `window`, as the monitor hears it.
    fn answers(key: &Key, monitor: &UdpSocket, window: Duration) -> Vec<Answer> {
        let until = std::time::Instant::now() + window;
        let mut heard = Vec::new();
        let mut buf = [0u8; 1024];
        while std::time::Instant::now() < until {
            if let Ok(n) = monitor.recv(&mut buf) {
                let message = open(key, &buf[..n]).filter(|m| m.say == Say::Probed);
                heard.extend(message.and_then(|m| Answer::decode(&m.fields)));
            }
        }
        heard
    }

    /// A task's order played back, whole, is not obeyed again.
    #[test]
    fn an_order_played_back_is_not_answered() {
        let key = Key::random().unwrap();
        let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
        monitor
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let agent = loopback::Agent::start("a", &key, monitor.local_addr().unwrap());
        let count = Order {
            token: Token::random().unwrap(),
            task: Task::Count {
                address: "127.0.0.1".parse().unwrap(),
            },
        };
        let seq = Sequence::default().advance();
        let order = seal(&key, Say::Probe, seq, 0, "a", &count.encode());
        let runner = UdpSocket::bind("127.0.0.1:0").unwrap();
        let window = Duration::from_millis(500);
        runner.send_to(&order, agent.orders).unwrap();
        let first = answers(&key, &monitor, window);
        assert!(
            matches!(&first[..], [Answer { token, state: State::Counted(_) }] if *token == count.token),
            "{first:?}"
        );
        runner.send_to(&order, agent.orders).unwrap();
        assert_eq!(answers(&key, &monitor, window), []);
        agent.stop();
    }

    /// An answer sealed for this very order, but about another task (an
    /// earlier one's, say), is not taken.
    #[test]
    fn an_answer_about_another_task_is_not_taken() {
        // Host a's agent, scripted.
        let lab = loopback::Scripted::new();
        let host = Peer {
            name: "a",
            agent: lab.orders(),
            migration_address: "127.0.0.1".parse().unwrap(),
        };
        let counted = std::thread::scope(|s| {
            s.spawn(|| {
                let order = lab.order();
                let (token, _) = Order::decode(&order.fields).unwrap();
                let mut seq = Sequence::default();
                for (token, interface) in [(Token::random().unwrap(), "other"), (token, "mig0")] {
                    let state = State::Counted(Counted {
                        interface: interface.into(),
                        counters: Default::default(),
                    });
                    let answer = Answer { token, state }.encode();
                    lab.say(Say::Probed, seq.advance(), order.seq, "a", &answer);
                }
            });
            counters(&lab.agents, &host)
        })
        .unwrap();
        assert_eq!(counted.interface, "mig0");
    }

    #[test]
    fn an_agent_that_fails_is_an_error_naming_its_host_and_why() {
        let lab = Lab::start();
        let nowhere = Peer {
            migration_address: "192.0.2.77".parse().unwrap(),
            ..lab.peer(1)
        };
        let err = goodput(&lab.agents, &lab.peer(0), &nowhere, free_port()).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains(&format!("host b's agent at {}", nowhere.agent))
                && err.contains("no interface of this host has the address 192.0.2.77"),
            "{err}"
        );
        lab.stop();
    }

    #[test]
    fn an_agent_that_does_not_answer_is_an_error_naming_its_host() {
        let lab = Lab::start();
        // Nothing takes orders there.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = Peer {
            agent: silent.local_addr().unwrap(),
            ..lab.peer(1)
        };
        let err = format!("{:#}", counters(&lab.agents, &gone).unwrap_err());
        assert!(
            err.contains(&format!("host b's agent at {} did not answer", gone.agent))
                && err.contains("older than the runner's"),
            "{err}"
        );
        lab.stop();
    }
}
