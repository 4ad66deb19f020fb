//! Which CRIU runs: a system `criu` when it passes `criu check` and is
//! recent enough for this kernel, else the one ci/setup.sh unpacked under
//! the artifacts directory, run through its own dynamic loader and
//! libraries so that nothing of the system changes.

use crate::guest::image::artifacts_dir;
use crate::sh;
use anyhow::Result;
use std::sync::OnceLock;

/// From Linux 6.16 on, SO_PASSCRED is refused on inet sockets and CRIU
/// before 4.2 cannot dump a process holding an IPv4 socket.
const KERNEL_NEEDING_4_2: (u32, u32) = (6, 16);

#[derive(Clone, Debug)]
pub struct Criu {
    /// The command line up to and including the criu binary.
    argv: Vec<String>,
    /// e.g. "4.2.1".
    pub version: String,
    /// e.g. "system criu (/usr/sbin/criu)".
    pub origin: String,
}

impl Criu {
    /// The CRIU this machine can use, found once per process.
    pub fn find() -> Result<Criu, String> {
        static FOUND: OnceLock<Result<Criu, String>> = OnceLock::new();
        FOUND.get_or_init(find).clone()
    }

    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        self.argv
            .iter()
            .cloned()
            .chain(args.iter().map(|a| a.to_string()))
            .collect()
    }

    /// Runs `criu args...` to completion, inside network namespace `ns`
    /// if one is given.
    pub fn run(&self, ns: Option<&str>, args: &[&str]) -> Result<String> {
        let argv = self.argv(args);
        let rest: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        match ns {
            Some(ns) => sh::run_in(ns, &argv[0], &rest),
            None => sh::run(&argv[0], &rest),
        }
    }

    /// `criu args...` inside network namespace `ns` if one is given, to be
    /// spawned; `ip netns exec` execs it, so the child's pid is CRIU's.
    pub fn command(&self, ns: Option<&str>, args: &[&str]) -> std::process::Command {
        let argv = self.argv(args);
        match ns {
            Some(ns) => {
                let mut cmd = std::process::Command::new("ip");
                cmd.args(["netns", "exec", ns]).args(argv);
                cmd
            }
            None => {
                let mut cmd = std::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
        }
    }

    /// Ok if `criu check --feature <name>` passes, else what CRIU said.
    pub fn feature(&self, name: &str) -> Result<(), String> {
        // A check answers at once; one that hangs must not hold the run.
        const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
        let argv = self.argv(&["check", "--feature", name]);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let out =
            crate::sh::output_within(&argv[0], &args, TIMEOUT).map_err(|e| format!("{e:#}"))?;
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        // Only CRIU's own verdict, without the pid/rlimit chatter.
        let said: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("RLIMIT_NOFILE") && !l.trim().is_empty())
            .collect();
        if out.status.success() {
            Ok(())
        } else {
            Err(said.join("; "))
        }
    }
}

fn find() -> Result<Criu, String> {
    let prefix = artifacts_dir().join("criu");
    let libs = format!(
        "{0}/lib/x86_64-linux-gnu:{0}/usr/lib/x86_64-linux-gnu",
        prefix.display()
    );
    let unpacked = Criu {
        argv: vec![
            prefix
                .join("usr/lib64/ld-linux-x86-64.so.2")
                .display()
                .to_string(),
            "--library-path".into(),
            libs,
            prefix.join("usr/sbin/criu").display().to_string(),
        ],
        version: String::new(),
        origin: format!(
            "Debian package {}, run from {}",
            std::fs::read_to_string(prefix.join("VERSION"))
                .unwrap_or_default()
                .trim(),
            prefix.display()
        ),
    };
    let system = Criu {
        argv: vec!["criu".into()],
        version: String::new(),
        origin: "system criu".into(),
    };
    let mut refused = Vec::new();
    for candidate in [system, unpacked] {
        match usable(candidate) {
            Ok(c) => return Ok(c),
            Err(e) => refused.push(e),
        }
    }
    Err(format!(
        "openvz: no usable CRIU (run ci/setup.sh): {}",
        refused.join("; ")
    ))
}

/// The candidate with its version, if it runs, passes `criu check` and is
/// recent enough for the running kernel.
fn usable(mut c: Criu) -> Result<Criu, String> {
    let what = c.argv.last().cloned().unwrap_or_default();
    let version = c
        .run(None, &["--version"])
        .map_err(|e| format!("{what}: {e}"))?;
    c.version = version
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    c.run(None, &["check"])
        .map_err(|e| format!("{what} {}: `criu check` failed: {e}", c.version))?;
    let kernel = sh::kernel_release();
    if major_minor(&kernel) >= KERNEL_NEEDING_4_2 && major_minor(&c.version) < (4, 2) {
        return Err(format!(
            "{what} {}: too old for Linux {} (CRIU < 4.2 cannot dump IPv4 sockets on Linux >= 6.16: \
             \"sockets: Can't get 1:16 opt: Operation not supported\")",
            c.version,
            kernel
        ));
    }
    Ok(c)
}

pub(super) fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(super::major_minor("6.18.44-fc-v769\n"), (6, 18));
        assert_eq!(super::major_minor("4.1.1"), (4, 1));
        assert!(super::major_minor("4.10") > (4, 2));
    }
}
