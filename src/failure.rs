//! The warned failure in a lab. Each lab host runs a host agent
//! (`crate::host_agent`) that sends its heartbeat, over the management
//! network, to the monitor on the runner's side; the injected failure is the
//! runner's order to the source host's agent to announce that the host is
//! going down (the study's heartbeat warning). The monitor's reception of
//! that warning, in answer to the run's own order, is time zero of every
//! timeline, and what triggers the evacuation; after the run the runner
//! orders the host to stay up again. A simulated host's agent is a thread of this process bound in
//! the host's namespace; a real host runs `migsuite host-agent`.

use crate::host_agent::{self, Agents, AGENT_PORT};
use crate::lab::{Lab, Place};
use crate::measure::WarningSeq;
use crate::wire::MONITOR_PORT;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct FailureMonitor {
    agents: Agents,
    /// The source host's name, and where its agent takes orders.
    source: (String, SocketAddr),
    stop: Arc<AtomicBool>,
    /// A simulated lab's agents, threads of this process.
    threads: Vec<JoinHandle<()>>,
}

impl FailureMonitor {
    /// The monitor at the lab's `monitor` address, once both hosts are
    /// heard up within `timeout`. A simulated lab's hosts get an agent
    /// each, under a new key; a real lab's run their own, under the key of
    /// its inventory.
    pub fn start(lab: &Lab, timeout: Duration) -> Result<FailureMonitor> {
        let to = SocketAddr::from((lab.inventory.monitor, MONITOR_PORT));
        let agents = lab.agents()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for host in [&lab.source, &lab.destination] {
            let Place::Simulated(simulated) = &host.place else {
                continue;
            };
            let socket = simulated
                .netns
                .enter(|| UdpSocket::bind((host.agent, AGENT_PORT)))??;
            let (name, key, stop) = (host.name.clone(), agents.key().clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                if let Err(e) = host_agent::serve(&name, &key, &socket, to, &stop) {
                    eprintln!("migsuite: host {name}'s agent stopped: {e:#}");
                }
            }));
        }
        // A run killed after its order left a real host's agent announcing
        // going down: the steady state before the warning is both hosts up.
        for host in [&lab.source, &lab.destination] {
            let agent = (host.agent, AGENT_PORT).into();
            agents
                .stand_up(&host.name, agent, timeout)
                .with_context(|| format!("host {}'s agent at {agent}", host.name))?;
        }
        Ok(FailureMonitor {
            agents,
            source: (
                lab.source.name.clone(),
                (lab.source.agent, AGENT_PORT).into(),
            ),
            stop,
            threads,
        })
    }

    /// The line to the hosts' agents, for the run's other questions to
    /// them.
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// Injects the failure and waits until the monitor hears the source
    /// host's authenticated warning, in answer to this order.
    pub fn inject(&self, timeout: Duration) -> Result<Warning> {
        let (host, agent) = &self.source;
        let heard = self.agents.bring_down(host, *agent, timeout)?;
        Ok(Warning {
            heard_at: heard.at,
            seq: WarningSeq {
                first_order: heard.first_order,
                answered_order: heard.answers,
                going_down: heard.seq,
            },
            ignored_from: heard.unauthenticated,
        })
    }

    /// Puts the source host back up after `inject`, and waits until it is
    /// heard alive again: a real host's agent outlives the run, and would
    /// announce going down through the next runs' steady states.
    pub fn stand_up(&self, timeout: Duration) -> Result<()> {
        let (host, agent) = &self.source;
        self.agents.stand_up(host, *agent, timeout)?;
        Ok(())
    }
}

/// The source host's warning, which heartbeat it was, and where the
/// datagrams came from that the monitor did not heed before it (no host's
/// sealed heartbeat).
pub struct Warning {
    pub heard_at: Instant,
    pub seq: WarningSeq,
    pub ignored_from: BTreeSet<IpAddr>,
}

impl Drop for FailureMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
