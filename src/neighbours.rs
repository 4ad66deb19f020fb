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

/// Every process's CPU time when a case began, and every process seen at a
/// later look (`look`, between runs: never while a run is measured), so
/// that one which ended before the case did is still counted.
pub struct Census {
    at: Instant,
    /// (pid, start time) -> CPU ticks at the census.
    ticks: HashMap<(i32, u64), u64>,
    /// (pid, start time) -> the process as last seen.
    seen: HashMap<(i32, u64), procfs::Stat>,
    /// The case's own pids, and those this process ran for other pairs, at
    /// any look.
    own: HashSet<i32>,
    others: HashSet<i32>,
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

/// Every process now, by (pid, start time).
fn processes() -> HashMap<(i32, u64), procfs::Stat> {
    procfs::pids()
        .into_iter()
        .filter_map(|pid| procfs::stat(pid).map(|s| ((pid, s.start_ticks), s)))
        .collect()
}

impl Census {
    pub fn take() -> Census {
        Census {
            at: Instant::now(),
            ticks: processes()
                .into_iter()
                .map(|(key, s)| (key, s.cpu_ticks))
                .collect(),
            seen: HashMap::new(),
            own: HashSet::new(),
            others: HashSet::new(),
        }
    }

    /// Looks at every process again, given which pids are the case's own
    /// now and which this process runs for other pairs (other cases).
    pub fn look(&mut self, own: &HashSet<i32>, others: &HashSet<i32>) {
        self.seen.extend(processes());
        self.own.extend(own);
        self.others.extend(others);
    }

    /// Processes that used at least `MIN_CPU_PCT` of a core from the census
    /// until now (a last look, with `own` and `others` as in `look`), except
    /// the case's own, the ones this process started, and kernel threads;
    /// but what this process started for other pairs is a neighbour.
    pub fn neighbours(&mut self, own: &HashSet<i32>, others: &HashSet<i32>) -> Neighbours {
        self.look(own, others);
        let seconds = self.at.elapsed().as_secs_f64().max(1e-3);
        let hz = procfs::clock_ticks();
        // Each pid's newest process, for the parent chains.
        let mut newest: HashMap<i32, &procfs::Stat> = HashMap::new();
        for (&(pid, _), s) in &self.seen {
            if newest
                .get(&pid)
                .is_none_or(|n| n.start_ticks < s.start_ticks)
            {
                newest.insert(pid, s);
            }
        }
        let me = std::process::id() as i32;
        let ours = |pid: i32| {
            // Up the parent chain: ours if it reaches this process or the
            // case's own pids; kernel threads descend from kthreadd (2).
            let mut p = pid;
            for _ in 0..64 {
                if self.own.contains(&p) || p == 2 {
                    return true;
                }
                if self.others.contains(&p) {
                    return false;
                }
                if p == me {
                    return true;
                }
                match newest.get(&p) {
                    Some(s) if s.ppid > 0 => p = s.ppid,
                    _ => return false,
                }
            }
            false
        };
        let mut busy: Vec<Neighbour> = self
            .seen
            .iter()
            .filter(|(&(pid, _), _)| !ours(pid))
            .filter_map(|(key, s)| {
                // Started during the case: all of its time is within it.
                let before = self.ticks.get(key).copied().unwrap_or(0);
                let cpu_pct = s.cpu_ticks.saturating_sub(before) as f64 / hz / seconds * 100.0;
                (cpu_pct >= MIN_CPU_PCT).then(|| Neighbour {
                    pid: key.0,
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
        let mut census = Census::take();
        let pid = spinner();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let none = HashSet::new();
        let others = census.neighbours(&none, &none);
        let own = census.neighbours(&HashSet::from([pid]), &none);
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
        let mut census = Census::take();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let none = HashSet::new();
        let for_us = census.neighbours(&none, &none);
        let for_another_pair = census.neighbours(&none, &HashSet::from([pid]));
        let _ = child.kill();
        let _ = child.wait();
        assert!(for_us.0.iter().all(|n| n.pid != pid), "{for_us}");
        assert!(
            for_another_pair.0.iter().any(|n| n.pid == pid),
            "{for_another_pair}"
        );
    }

    #[test]
    fn a_neighbour_that_ended_before_the_case_is_still_named() {
        let mut census = Census::take();
        let pid = spinner();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let none = HashSet::new();
        census.look(&none, &none);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            procfs::stat(pid).is_none_or(|s| s.state == 'Z')
        });
        assert!(gone, "the spinner {pid} outlived SIGKILL");
        let beside = census.neighbours(&none, &none);
        assert!(beside.0.iter().any(|n| n.pid == pid), "{beside}");
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
