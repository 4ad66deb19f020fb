//! The lab hosts' agents and the runner's line to them, on networks that
//! others can write to. Each lab host runs a host agent (`serve`: a thread
//! bound in a simulated host's namespace, or `migsuite host-agent` on a
//! real host) that sends the runner a heartbeat every `INTERVAL` saying
//! whether the host is alive or going down (the study's warning), and
//! takes the runner's orders: to announce going down (the injected
//! failure) or to stay up, and the tasks of the migration network's
//! measurement (`probe`). Every datagram is sealed (`sealed`): a sequence
//! number and an HMAC-SHA256 under the lab's key, so that without the key
//! (a guest, anyone on the LAN) a warning or an order can be neither
//! forged nor played back. Every heartbeat names the last order its agent
//! obeyed, so the runner (`Agents`) takes only the answer to its own
//! order, never one queued or captured before.
//!
//! (The guest's own heartbeats, which show its downtime, are another
//! stream: `crate::wire` and `crate::observer`.)

pub mod agents;
#[cfg(test)]
pub(crate) mod loopback;
pub mod probe;
pub mod sealed;
pub mod serve;

pub use agents::{Agents, Heard};
pub use sealed::{Key, Message, Say};
pub use serve::serve;

use std::time::Duration;

/// Where a host agent takes the runner's orders.
pub const AGENT_PORT: u16 = 7003;
/// How often a host agent says how its host is.
pub const INTERVAL: Duration = Duration::from_millis(100);
