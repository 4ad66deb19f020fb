//! Datagrams between the workload agent in the guest and the observer on the
//! runner's side. Shared, through `#[path]`, by the agent (built std-only and
//! static by build.rs) and the crate.

pub const MAGIC: [u8; 4] = *b"MSW1";
/// Heartbeats and hellos go here; the packet stream goes to DATA_PORT.
pub const OBSERVER_PORT: u16 = 7000;
pub const DATA_PORT: u16 = 7002;
/// Lab hosts' heartbeats (failure warnings, `crate::host_agent`) go here.
pub const MONITOR_PORT: u16 = 7001;
/// The warning a hostile guest forges: not sealed with the lab's key, so
/// the monitor does not heed it.
pub const FORGED_GOING_DOWN: &[u8] = b"going-down";
pub const HEARTBEAT_INTERVAL_MS: u64 = 1;
/// The line the agent prints on its console as it starts: where the
/// network is not up yet, the sign that the guest's kernel ran it.
pub const AGENT_STARTED: &str = "migsuite-agent: started";

pub const KIND_HELLO: u8 = 0;
pub const KIND_HEARTBEAT: u8 = 1;
pub const KIND_DATA: u8 = 2;

/// What a heartbeat carries: its sequence number, the agent's own clock, and
/// the agent's check of the memory it keeps dirty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub seq: u64,
    pub agent_ns: u64,
    /// Complete passes over the dirty buffer so far.
    pub dirty_passes: u64,
    /// Pages found not holding what the agent last wrote there.
    pub memory_errors: u64,
}

pub const HEARTBEAT_LEN: usize = 5 + 32;

impl Heartbeat {
    pub fn encode(&self) -> [u8; HEARTBEAT_LEN] {
        let mut b = [0u8; HEARTBEAT_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = KIND_HEARTBEAT;
        for (i, v) in [
            self.seq,
            self.agent_ns,
            self.dirty_passes,
            self.memory_errors,
        ]
        .iter()
        .enumerate()
        {
            b[5 + 8 * i..13 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Heartbeat> {
        if b.len() < HEARTBEAT_LEN || b[..4] != MAGIC || b[4] != KIND_HEARTBEAT {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[5 + 8 * i..13 + 8 * i].try_into().unwrap());
        Some(Heartbeat {
            seq: word(0),
            agent_ns: word(1),
            dirty_passes: word(2),
            memory_errors: word(3),
        })
    }
}

/// A hello: `key=value` lines describing the guest (drivers, kernel...).
pub fn encode_hello(text: &str) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.push(KIND_HELLO);
    b.extend_from_slice(text.as_bytes());
    b
}

pub fn decode_hello(b: &[u8]) -> Option<String> {
    (b.len() >= 5 && b[..4] == MAGIC && b[4] == KIND_HELLO)
        .then(|| String::from_utf8_lossy(&b[5..]).into_owned())
}
