//! What /proc says of a process, read in one place: the sampler, the
//! neighbour census and the stale-lab sweeper all need the same fields.

/// Fields of `/proc/<pid>/stat`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    /// `comm`: the executable's name, at most 15 bytes.
    pub command: String,
    pub state: char,
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Since boot, in clock ticks: with the pid, it names one process across
    /// pid reuse.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// A field of `/proc/meminfo` (e.g. "MemTotal"), in MiB.
pub fn meminfo_mib(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `/proc/<pid>/stat` of a live process.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command is parenthesised and may itself hold spaces and ')'.
    let (head, rest) = text.rsplit_once(')')?;
    let command = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5).
    let num = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        command,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        rss_pages: num(24)?,
    })
}

/// Every process (thread-group leader) now.
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Clock ticks per second (`USER_HZ`).
pub fn clock_ticks() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_with_spaces_and_parentheses() {
        let text = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0 123456 \
                    1000000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.command, "a b) c");
        assert_eq!((s.state, s.ppid), ('S', 1));
        assert_eq!(
            (s.cpu_ticks, s.start_ticks, s.rss_pages),
            (100, 123456, 250)
        );
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.start_ticks > 0);
        assert!(pids().contains(&(std::process::id() as i32)));
    }
}
