//! Samples CPU and memory over time. On simulated hosts, from this
//! machine's /proc: the hypervisor processes of each host, each host's
//! toolstack daemon, and the whole machine. On real hosts, from what their
//! hypervisors report of the guest.

use crate::measure::{Timeline, Unit};
use crate::procfs;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pids to sample at one instant: guest hypervisor processes and toolstack
/// daemon of (source, destination).
#[derive(Clone, Debug, Default)]
pub struct Pids {
    pub guest: [Vec<i32>; 2],
    pub toolstack: [Option<i32>; 2],
}

/// What the sampler calls at every tick to find the pids to sample (a
/// backend's `sample_source`): processes come and go as the guest moves.
pub type ProcessProbe = Box<dyn Fn() -> Pids + Send>;

/// The guest's hypervisor on one host, as that host reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reported {
    /// CPU time used since it started, ns.
    pub cpu_ns: u64,
    /// Resident memory, MiB, if the host could tell it at once.
    pub rss_mib: Option<f64>,
    /// When it was asked, and when the host answered: a daemon may hold an
    /// answer back while a migration job runs, so ticks do not time it,
    /// and the figure was read somewhere between the two.
    pub asked: Instant,
    pub at: Instant,
}

impl Reported {
    /// The most likely time the host read its figures, and how far off it
    /// may be.
    fn read_at(&self) -> (Instant, Duration) {
        let half = (self.at - self.asked) / 2;
        (self.asked + half, half)
    }
}

/// What a backend gives the sampler to look at.
pub enum Source {
    /// This machine's processes: the hosts are its namespaces.
    Processes(ProcessProbe),
    /// What each host (source, destination) reports of the guest's
    /// hypervisor, None where it runs none: the hosts are machines of
    /// their own.
    Reported(Box<dyn FnMut() -> [Option<Reported>; 2] + Send>),
}

/// Timeline names per host: (hypervisor CPU, hypervisor memory, toolstack CPU).
const NAMES: [(&str, &str, &str); 2] = [
    (
        "cpu.source.hypervisor",
        "memory.source.hypervisor",
        "cpu.source.toolstack",
    ),
    (
        "cpu.destination.hypervisor",
        "memory.destination.hypervisor",
        "cpu.destination.toolstack",
    ),
];

#[derive(Default)]
struct Series {
    /// (when, name, unit, value)
    points: Vec<(Instant, &'static str, Unit, f64)>,
}

pub struct Sampler {
    series: Arc<Mutex<Series>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// (busy, total) jiffies of the whole machine.
fn machine_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

fn machine_used_mib() -> Option<f64> {
    Some(procfs::meminfo_mib("MemTotal")? - procfs::meminfo_mib("MemAvailable")?)
}

/// A timeline's name, unit and value at one tick.
type Point = (&'static str, Unit, f64);

/// Each tick's look at this machine's processes (`pids`) and at the machine,
/// given the seconds since the last.
fn processes(pids: ProcessProbe) -> impl FnMut(f64) -> Vec<Point> {
    let hz = procfs::clock_ticks();
    let page_mib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as f64 / (1 << 20) as f64;
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    // Keyed by pid and start time: a pid reused by a new process
    // starts a count of its own.
    let mut last_ticks: HashMap<(i32, u64), u64> = HashMap::new();
    let mut last_machine = machine_cpu();
    move |dt| {
        let p = pids();
        let mut out = Vec::new();
        // (percent of one CPU, RSS MiB) summed over `pids`.
        let mut usage = |pids: &[i32]| -> (f64, f64) {
            let (mut ticks, mut rss) = (0, 0);
            for &pid in pids {
                if let Some(s) = procfs::stat(pid) {
                    let t = s.cpu_ticks;
                    // A process first seen now counts from here: its
                    // earlier CPU belongs to before this interval.
                    let before = last_ticks.insert((pid, s.start_ticks), t).unwrap_or(t);
                    ticks += t.saturating_sub(before);
                    rss += s.rss_pages;
                }
            }
            (ticks as f64 / hz / dt * 100.0, rss as f64 * page_mib)
        };
        for (i, (cpu_name, mem_name, toolstack_name)) in NAMES.into_iter().enumerate() {
            let (cpu, rss) = usage(&p.guest[i]);
            out.push((cpu_name, Unit::Percent, cpu));
            out.push((mem_name, Unit::Mib, rss));
            let (cpu, _) = usage(p.toolstack[i].as_slice());
            out.push((toolstack_name, Unit::Percent, cpu));
        }
        if let (Some((b0, t0)), Some((b1, t1))) = (last_machine, machine_cpu()) {
            // Percent of the whole machine (all CPUs).
            let pct = if t1 > t0 {
                b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0
            } else {
                0.0
            };
            out.push(("cpu.machine", Unit::Percent, pct.min(100.0 * ncpu)));
            last_machine = Some((b1, t1));
        }
        if let Some(used) = machine_used_mib() {
            out.push(("memory.machine", Unit::Mib, used));
        }
        out
    }
}

/// Each tick's look at what the hosts report of the guest's hypervisor.
/// Neither their toolstacks nor their machines are in it: the runner sees
/// only what libvirt tells.
fn reported(
    mut report: Box<dyn FnMut() -> [Option<Reported>; 2] + Send>,
    host_cpus: [Option<u32>; 2],
) -> impl FnMut(f64) -> Vec<Point> {
    /// Answers closer than this (a late tick catching up) give no rate.
    const SHORTEST: Duration = Duration::from_millis(20);
    /// A rate is given only over a window this many times longer than the
    /// uncertainty of its ends' times: an answer held back and one right
    /// after it would otherwise rate a second's CPU over a few ms.
    const WINDOW_OVER_UNCERTAINTY: u32 = 4;
    let mut last: [Option<Reported>; 2] = [None, None];
    move |_| {
        let now = report();
        let mut out = Vec::new();
        for (i, (cpu_name, mem_name, _)) in NAMES.into_iter().enumerate() {
            let Some(r) = now[i] else {
                last[i] = None;
                out.push((cpu_name, Unit::Percent, 0.0));
                out.push((mem_name, Unit::Mib, 0.0));
                continue;
            };
            if let Some(rss) = r.rss_mib {
                out.push((mem_name, Unit::Mib, rss));
            }
            // A hypervisor first seen now, or started anew (its count went
            // back), counts from here.
            let Some(b) = last[i].filter(|b| b.cpu_ns <= r.cpu_ns) else {
                last[i] = Some(r);
                continue;
            };
            let ((from, off_from), (to, off_to)) = (b.read_at(), r.read_at());
            let window = to.saturating_duration_since(from);
            if window < SHORTEST {
                continue;
            }
            if (off_from + off_to) * WINDOW_OVER_UNCERTAINTY > window {
                // No rate; the window grows from the better-timed end.
                if off_to <= off_from {
                    last[i] = Some(r);
                }
                continue;
            }
            let pct = (r.cpu_ns - b.cpu_ns) as f64 / 1e9 / window.as_secs_f64() * 100.0;
            // More than the host's CPUs could give: the host charged CPU
            // time in a burst (an emulated host's accounting catches up
            // after its vCPUs stalled), so this window does not measure
            // what its ends say. It grows until it covers the burst.
            if host_cpus[i].is_some_and(|n| pct > f64::from(n) * 100.0) {
                continue;
            }
            out.push((cpu_name, Unit::Percent, pct));
            last[i] = Some(r);
        }
        out
    }
}

impl Sampler {
    /// Samples `source` every `interval`; `host_cpus` (source,
    /// destination) are the CPUs of hosts that are machines of their own,
    /// where known: no process on one runs on more.
    pub fn start(interval: Duration, source: Source, host_cpus: [Option<u32>; 2]) -> Sampler {
        let series = Arc::new(Mutex::new(Series::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (series2, stop2) = (series.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut look: Box<dyn FnMut(f64) -> Vec<Point> + Send> = match source {
                Source::Processes(pids) => Box::new(processes(pids)),
                Source::Reported(report) => Box::new(reported(report, host_cpus)),
            };
            let mut last = Instant::now();
            let mut next = last + interval;
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += interval;
                let now = Instant::now();
                let dt = (now - last).as_secs_f64();
                last = now;
                let out = look(dt);
                let mut s = series2.lock().unwrap();
                s.points
                    .extend(out.into_iter().map(|(n, u, v)| (now, n, u, v)));
            }
        });
        Sampler {
            series,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the timelines, times relative to `zero`.
    pub fn finish(mut self, zero: Instant) -> Vec<Timeline> {
        self.stop_thread();
        let series = std::mem::take(&mut *self.series.lock().unwrap());
        let mut by_name: Vec<Timeline> = Vec::new();
        for (t, name, unit, v) in series.points {
            let rel = if t >= zero {
                (t - zero).as_millis() as i64
            } else {
                -((zero - t).as_millis() as i64)
            };
            match by_name.iter_mut().find(|tl| tl.name == name) {
                Some(tl) => tl.points.push((rel, v)),
                None => by_name.push(Timeline {
                    name: name.to_string(),
                    unit,
                    points: vec![(rel, v)],
                }),
            }
        }
        by_name
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64, cpu_ms: u64) -> [Option<Reported>; 2] {
        answered(t0, ms, ms, cpu_ms)
    }

    /// Asked at `asked_ms`, answered at `ms`.
    fn answered(t0: Instant, asked_ms: u64, ms: u64, cpu_ms: u64) -> [Option<Reported>; 2] {
        let r = Reported {
            cpu_ns: cpu_ms * 1_000_000,
            rss_mib: Some(100.0),
            asked: t0 + Duration::from_millis(asked_ms),
            at: t0 + Duration::from_millis(ms),
        };
        [Some(r), None]
    }

    fn source_cpu(points: Vec<Point>) -> Option<f64> {
        let source = points.iter().find(|p| p.0 == "cpu.source.hypervisor");
        source.map(|p| p.2)
    }

    /// A real host's daemon may answer late (while a migration job runs):
    /// its CPU is rated over the times it answered, never over a tick.
    #[test]
    fn a_hosts_cpu_is_rated_over_the_times_it_answered() {
        let t0 = Instant::now();
        let mut answers = vec![
            at(t0, 0, 1000),
            at(t0, 1000, 1500),
            // A late tick catching up: too close to rate.
            at(t0, 1005, 1600),
            // Started anew (the guest came back): counted from here.
            at(t0, 2000, 200),
            at(t0, 3000, 400),
        ]
        .into_iter();
        let mut look = reported(Box::new(move || answers.next().unwrap()), [Some(2), None]);
        let cpu = source_cpu;
        assert_eq!(cpu(look(0.1)), None, "first seen: no rate yet");
        approx::assert_relative_eq!(cpu(look(0.1)).unwrap(), 50.0, epsilon = 1e-9);
        assert_eq!(cpu(look(0.1)), None);
        assert_eq!(cpu(look(0.1)), None);
        approx::assert_relative_eq!(cpu(look(0.1)).unwrap(), 20.0, epsilon = 1e-9);
    }

    /// An answer held back (asked at 100 ms, answered at 1000) and one
    /// right after it: no rate from their ends' arrival times (which would
    /// read 1 s of CPU in 100 ms as 1000 %); the window grows until its
    /// ends are well timed, and the rate over it is the true one.
    #[test]
    fn a_held_back_answer_gives_no_spike() {
        let t0 = Instant::now();
        let mut answers = vec![
            answered(t0, 0, 0, 0),
            answered(t0, 100, 1000, 500),
            answered(t0, 1100, 1100, 1100),
            answered(t0, 2000, 2000, 2000),
        ]
        .into_iter();
        let mut look = reported(Box::new(move || answers.next().unwrap()), [Some(2), None]);
        assert_eq!(source_cpu(look(0.1)), None);
        assert_eq!(
            source_cpu(look(0.1)),
            None,
            "its read time is 450 ms uncertain"
        );
        approx::assert_relative_eq!(source_cpu(look(0.1)).unwrap(), 100.0, epsilon = 1e-9);
        approx::assert_relative_eq!(source_cpu(look(0.1)).unwrap(), 100.0, epsilon = 1e-9);
    }

    /// A host of two CPUs that charges 1.2 s of CPU between two answers
    /// 200 ms apart (seen on the stand-in: 1604 % of "peak CPU"): no rate
    /// from that window; the next one, from the same start, covers the
    /// burst.
    #[test]
    fn a_rate_beyond_the_hosts_cpus_waits_for_a_wider_window() {
        let t0 = Instant::now();
        let mut answers = vec![at(t0, 0, 0), at(t0, 200, 1200), at(t0, 1000, 1400)].into_iter();
        let mut look = reported(Box::new(move || answers.next().unwrap()), [Some(2), None]);
        assert_eq!(source_cpu(look(0.1)), None);
        assert_eq!(source_cpu(look(0.1)), None, "600 % on two CPUs");
        approx::assert_relative_eq!(source_cpu(look(0.1)).unwrap(), 140.0, epsilon = 1e-9);
    }
}
