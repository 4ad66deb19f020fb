//! Who made a thing on a real lab's host (a guest, a volume, a hold), said
//! so that a later run on any machine can tell whether its maker still
//! lives. A pid alone is reused and a host name is shared by clones, so the
//! runner is named by its machine id (systemd's /etc/machine-id) and boot id
//! (one boot of that machine) and, within the boot, by pid and start time
//! (`cleanup::owner_tag`).

use super::cleanup;
use anyhow::{Context, Result};
use std::fmt;
use std::sync::OnceLock;

/// Hex digits kept of the machine and boot ids: enough to tell a lab's
/// runners apart, short enough for the names of volumes.
const ID_DIGITS: usize = 16;

/// A runner process: `<pid>@<start>.<boot>.<machine>` when written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `<pid>@<start time>`, as `cleanup::owner_tag` writes it.
    pub process: String,
    pub boot: String,
    pub machine: String,
}

/// What this machine can tell of an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Of this machine, and not running: an earlier boot, or a process of
    /// this boot that is over.
    Gone,
    /// Of another machine, which only that machine can tell.
    Elsewhere,
}

impl Owner {
    /// This process.
    pub fn this() -> Result<&'static Owner> {
        static THIS: OnceLock<Owner> = OnceLock::new();
        if let Some(owner) = THIS.get() {
            return Ok(owner);
        }
        let owner = Owner {
            process: cleanup::owner_tag(),
            boot: id_of("/proc/sys/kernel/random/boot_id")?,
            machine: id_of("/etc/machine-id")?,
        };
        Ok(THIS.get_or_init(|| owner))
    }

    /// The owner `text` names (as `Display` writes it), if it names one.
    pub fn parse(text: &str) -> Option<Owner> {
        let mut parts = text.split('.');
        let (process, boot, machine) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str| s.len() == ID_DIGITS && s.bytes().all(|b| b.is_ascii_hexdigit());
        let (pid, start) = process.split_once('@')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (parts.next().is_none() && hex(boot) && hex(machine) && digits(pid) && digits(start)).then(
            || Owner {
                process: process.into(),
                boot: boot.into(),
                machine: machine.into(),
            },
        )
    }

    /// Whether this owner still runs, as far as this machine can tell.
    pub fn liveness(&self) -> Result<Liveness> {
        let this = Owner::this()?;
        Ok(liveness(self, this, cleanup::owner_alive))
    }

    /// "pid 123 (boot 1a2b…) of machine 3c4d…", for people.
    pub fn describe(&self) -> String {
        let pid = self.process.split('@').next().unwrap_or(&self.process);
        format!("pid {pid} (boot {}) of machine {}", self.boot, self.machine)
    }
}

fn liveness(owner: &Owner, this: &Owner, process_alive: impl Fn(&str) -> bool) -> Liveness {
    if owner.machine != this.machine {
        Liveness::Elsewhere
    } else if owner.boot != this.boot || !process_alive(&owner.process) {
        Liveness::Gone
    } else {
        Liveness::Alive
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}.{}.{}", self.process, self.boot, self.machine)
    }
}

/// The first hex digits of the id in `path` (dashes left out).
fn id_of(path: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}, which names this runner on lab hosts"))?;
    let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    anyhow::ensure!(
        hex.len() >= ID_DIGITS,
        "{path} holds `{}`, not an id of at least {ID_DIGITS} hex digits",
        text.trim()
    );
    Ok(hex[..ID_DIGITS].to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(process: &str, boot: &str, machine: &str) -> Owner {
        Owner {
            process: process.into(),
            boot: boot.repeat(ID_DIGITS),
            machine: machine.repeat(ID_DIGITS),
        }
    }

    #[test]
    fn an_owner_reads_back_as_written() {
        let o = owner("4242@900", "a", "b");
        assert_eq!(Owner::parse(&o.to_string()), Some(o));
        let this = Owner::this().unwrap();
        assert_eq!(Owner::parse(&this.to_string()).as_ref(), Some(this));
        for bad in [
            "",
            "4242@900",
            "4242.aaaa.bbbb",
            "x@1.aaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbb",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_this_machine_can_tell_an_owner_gone() {
        let this = owner("1@1", "a", "b");
        let alive = |_: &str| true;
        assert_eq!(liveness(&this, &this, alive), Liveness::Alive);
        // A pid of this boot that is over; any pid of an earlier boot.
        assert_eq!(liveness(&this, &this, |_| false), Liveness::Gone);
        assert_eq!(
            liveness(&owner("1@1", "c", "b"), &this, alive),
            Liveness::Gone
        );
        assert_eq!(
            liveness(&owner("1@1", "a", "d"), &this, alive),
            Liveness::Elsewhere
        );
    }

    #[test]
    fn this_process_is_alive() {
        let this = Owner::this().unwrap();
        assert_eq!(this.liveness().unwrap(), Liveness::Alive);
    }
}
