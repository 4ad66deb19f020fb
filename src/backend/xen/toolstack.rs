//! A Xen host's dom0 as the backend drives it, wherever it runs: a nested
//! host of the simulated lab (`host`) or a real lab's machine reached over
//! ssh (`remote`). Both serve the same command protocol (`channel`) and run
//! the same tools (`dom0::TOOLS`); they differ in where the domU's files
//! are, how its vif joins the bridge and how the host is sampled.

use super::channel::Answer;
use crate::sampler::Reported;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Where a dom0 keeps what a domU needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The domU's kernel and initramfs, paths in dom0.
    pub kernel: String,
    pub initrd: String,
    /// The bridge of the guest LAN, which the domU's vif joins.
    pub bridge: String,
    /// The vif hotplug script; None: the toolstack's own (vif-bridge).
    pub vif_script: Option<&'static str>,
    /// Where an HVM domU's serial console is written (xenconsoled logs
    /// no HVM serial port).
    pub serial_log: String,
    /// Where xenconsoled logs a PV domU's console, if it does.
    pub console_logs: String,
    /// Where the domU's xl configuration is written.
    pub config: String,
}

pub trait Dom0: Send + Sync {
    /// Runs `command` (one line, bash) in dom0, with `timeout`.
    fn sh(&self, command: &str, timeout: Duration) -> Result<Answer>;

    /// Which lab host it is (0 or 1): what names it in messages.
    fn index(&self) -> u8;

    fn layout(&self) -> &Layout;

    /// Xen's version and the toolstack's, as dom0 told them.
    fn versions(&self) -> &Versions;

    /// How the host came up, for the report (a nested host's boot time).
    fn came_up(&self) -> String;

    /// Xen's and dom0's serial console so far, where the runner sees it.
    fn machine_console(&self) -> Option<String> {
        None
    }

    /// The process that is the whole Xen host, where it is one of the
    /// runner's (a nested host's QEMU).
    fn qemu_pid(&self) -> Option<i32> {
        None
    }

    /// What the host reports of its CPU and memory, where it is sampled
    /// by asking it.
    fn report(&self) -> Option<Reported> {
        None
    }

    /// Like `sh`, failing with its output unless it exits 0.
    fn check(&self, command: &str, timeout: Duration) -> Result<String> {
        let a = self.sh(command, timeout)?;
        if a.status != 0 {
            bail!(
                "in dom0, `{command}` failed (exit {}): {}",
                a.status,
                a.output.trim()
            );
        }
        Ok(a.output)
    }

    /// dom0's clock minus the runner's, in seconds, and how far off that
    /// can be (half the best of a few round trips on the command channel):
    /// two Xen hosts keep two clocks.
    fn clock_offset(&self) -> Result<(f64, f64)> {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let mut best: Option<(f64, f64)> = None;
        for _ in 0..5 {
            let sent = now();
            let dom0: f64 = self
                .check("echo $EPOCHREALTIME", Duration::from_secs(10))?
                .trim()
                .parse()
                .context("dom0's EPOCHREALTIME")?;
            let received = now();
            let half_trip = (received - sent) / 2.0;
            if best.is_none_or(|(_, h)| half_trip < h) {
                best = Some((dom0 - (sent + half_trip), half_trip));
            }
        }
        best.context("no clock reading")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub xen: String,
    pub toolstack: String,
    /// `xl info`'s xen_caps.
    pub caps: String,
}

impl Versions {
    /// From `xl info`'s output, with the toolstack's version as known.
    pub fn from_xl_info(info: &str, toolstack: String) -> Versions {
        let field = |k: &str| {
            info.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(a, _)| a.trim() == k)
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        Versions {
            xen: format!(
                "Xen {}.{}{}",
                field("xen_major"),
                field("xen_minor"),
                field("xen_extra")
            ),
            toolstack,
            caps: field("xen_caps"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_xl_info() {
        let info = "host                   : standin-c\nxen_major              : 4\nxen_minor              : 17\nxen_extra              : .5\nxen_caps               : xen-3.0-x86_64 hvm-3.0-x86_64\n";
        let v = Versions::from_xl_info(info, "xl (xen-utils 4.17.5)".into());
        assert_eq!(v.xen, "Xen 4.17.5");
        assert_eq!(v.caps, "xen-3.0-x86_64 hvm-3.0-x86_64");
        assert_eq!(Versions::from_xl_info("", String::new()).xen, "Xen .");
    }
}
