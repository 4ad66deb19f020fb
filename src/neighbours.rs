//! What else ran on the machine while a case was measured. On a shared
//! 2-core machine a busy neighbour slows a migration as much as a slower
//! link does, so each case's provenance names the processes, not its own,
//! that used more than a little CPU while it ran.

use crate::procfs;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Instant;

/// Below this share of one core a process is not worth naming.
const MIN_CPU_PCT: f64 = 5.0;

/// Every process's CPU time at one instant.
pub struct Census {
    at: Instant,
    /// (pid, start time) -> CPU ticks so far.
    ticks: HashMap<(i32, u64), u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub pid: i32,
    pub command: String,
    /// Percent of one core, averaged over the case.
    pub cpu_pct: f64,
}

/// The neighbours of one case, busiest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Neighbours(pub Vec<Neighbour>);

impl Census {
    pub fn take() -> Census {
        let ticks = procfs::pids()
            .into_iter()
            .filter_map(|pid| procfs::stat(pid).map(|s| ((pid, s.start_ticks), s.cpu_ticks)))
            .collect();
        Census {
            at: Instant::now(),
            ticks,
        }
    }

    /// Processes that used at least `MIN_CPU_PCT` of a core from this census
    /// until now, except the ones `own` (pids of the case) or this process
    /// started, and kernel threads; but what this process started for
    /// `others` (other cases, on other pairs of the lab) is a neighbour.
    pub fn neighbours_since(&self, own: &HashSet<i32>, others: &HashSet<i32>) -> Neighbours {
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let hz = procfs::clock_ticks();
        let now: HashMap<i32, procfs::Stat> = procfs::pids()
            .into_iter()
            .filter_map(|pid| procfs::stat(pid).map(|s| (pid, s)))
            .collect();
        let me = std::process::id() as i32;
        let ours = |pid: i32| {
            // Up the parent chain: ours if it reaches this process or the
            // case's own pids; kernel threads descend from kthreadd (2).
            let mut p = pid;
            for _ in 0..64 {
                if own.contains(&p) || p == 2 {
                    return true;
                }
                if others.contains(&p) {
                    return false;
                }
                if p == me {
                    return true;
                }
                match now.get(&p) {
                    Some(s) if s.ppid > 0 => p = s.ppid,
                    _ => return false,
                }
            }
            false
        };
        let mut busy: Vec<Neighbour> = now
            .iter()
            .filter(|(&pid, _)| !ours(pid))
            .filter_map(|(&pid, s)| {
                // Started during the case: all of its time is within it.
                let before = self.ticks.get(&(pid, s.start_ticks)).copied().unwrap_or(0);
                let cpu_pct = s.cpu_ticks.saturating_sub(before) as f64 / hz / seconds * 100.0;
                (cpu_pct >= MIN_CPU_PCT).then(|| Neighbour {
                    pid,
                    command: s.command.clone(),
                    cpu_pct,
                })
            })
            .collect();
        busy.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
        Neighbours(busy)
    }
}

/// "nothing above 5 % of a core", or "qemu-system-x86 (pid 9) 98 %, ...".
impl fmt::Display for Neighbours {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "nothing above {MIN_CPU_PCT} % of a core");
        }
        let named: Vec<String> = self
            .0
            .iter()
            .map(|n| format!("{} (pid {}) {:.0} %", n.command, n.pid, n.cpu_pct))
            .collect();
        write!(f, "{} of a core", named.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy process orphaned to init (as another user's job would be).
    fn spinner() -> i32 {
        let out = std::process::Command::new("sh")
            .args(["-c", "(while :; do :; done) >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_busy_process_outside_the_case_is_named_unless_it_is_the_case_s() {
        let census = Census::take();
        let pid = spinner();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let none = HashSet::new();
        let others = census.neighbours_since(&none, &none);
        let own = census.neighbours_since(&HashSet::from([pid]), &none);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        assert!(
            others
                .0
                .iter()
                .any(|n| n.pid == pid && n.cpu_pct >= MIN_CPU_PCT),
            "{others}"
        );
        assert!(own.0.iter().all(|n| n.pid != pid), "{own}");
    }

    #[test]
    fn what_this_process_started_for_another_pair_is_a_neighbour() {
        let census = Census::take();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let none = HashSet::new();
        let for_us = census.neighbours_since(&none, &none);
        let for_another_pair = census.neighbours_since(&none, &HashSet::from([pid]));
        let _ = child.kill();
        let _ = child.wait();
        assert!(for_us.0.iter().all(|n| n.pid != pid), "{for_us}");
        assert!(
            for_another_pair.0.iter().any(|n| n.pid == pid),
            "{for_another_pair}"
        );
    }

    #[test]
    fn says_who_and_how_much() {
        let n = Neighbours(vec![Neighbour {
            pid: 9,
            command: "qemu-system-x86".into(),
            cpu_pct: 98.4,
        }]);
        assert_eq!(n.to_string(), "qemu-system-x86 (pid 9) 98 % of a core");
        assert_eq!(
            Neighbours::default().to_string(),
            "nothing above 5 % of a core"
        );
    }
}
