//! A real lab's Xen host: its dom0 reached over ssh as root, where `xl`
//! runs. Per case, a session: a directory of its own in dom0
//! (`SESSIONS_DIR/<id>`, root's alone) with migsuite's tools, the domU's
//! kernel and initramfs and the migration's files, and two command
//! servers on ssh sessions (one for commands, one for sampling, so that
//! sampling goes on while a migration runs). When the command session's
//! input closes (the case is over, or the runner died, whichever way),
//! dom0 destroys the case's domU (known by its UUID) and removes the
//! directory.

use super::channel::{self, Answer, Channel, Line};
use super::dom0;
use super::toolstack::{Dom0, Layout, Versions};
use crate::lab;
use crate::sampler::Reported;
use crate::sh::ssh;
use anyhow::{bail, Context, Result};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a real dom0 keeps migsuite's sessions.
pub const SESSIONS_DIR: &str = "/var/lib/migsuite/xen-host";
/// Reaching dom0 and its first answer, over ssh.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Copying the domU's kernel or initramfs to dom0.
const COPY_TIMEOUT: Duration = Duration::from_secs(300);
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The command server, in bash, run by ssh. `@DIR@`, `@ROLE@` and `@UUID@`
/// are filled in (a session id and a UUID: no quoting needed). The command
/// role makes the directory and removes it, with the domU, when its input
/// ends; the sampler role only serves. Its input may end while a command
/// runs (a migration, minutes): the runner sends nothing else while it
/// waits for an answer, so a reader beside the command sees the end at
/// once, and the command goes with the session.
const SERVER: &str = r#"set -u
umask 077
D=@DIR@
role=@ROLE@
export PATH="$D/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" MIGSUITE_RUN="$D/run" MIGSUITE_TOKEN="$D/stream.token"
if [ "$role" = command ]; then
  [ "$(id -u)" = 0 ] || { echo "the migsuite session runs as root (xl needs it), not as $(id -un)"; exit 1; }
  command -v xl >/dev/null || { echo "no xl on this host (the Xen toolstack, Debian package xen-utils-4.17)"; exit 1; }
  mkdir -p -m 700 "$(dirname "$D")" && mkdir -m 700 "$D" "$D/bin" "$D/run" "$D/guest" || exit 1
  cleanup() {
    [ -n "${job:-}" ] && kill -TERM "$job" 2>/dev/null
    migsuite-kill-receiver >/dev/null 2>&1
    for id in $(xl list -v 2>/dev/null | awk -v u=@UUID@ "NR > 1 && \$7 == u {print \$2}"); do
      xl destroy "$id" >/dev/null 2>&1
    done
    rm -rf "$D"
  }
  trap cleanup EXIT
  trap "exit 1" HUP INT TERM
else
  [ -d "$D" ] || { echo "no session $D"; exit 1; }
fi
exec 3<&0
echo @@READY
next=""
while if [ -n "$next" ]; then line=$next; next=""; else IFS= read -r -u 3 line; fi; do
  id=${line%% *}; rest=${line#* }; secs=${rest%% *}; cmd=${rest#* }
  timeout -s KILL "$secs" bash -c "$cmd" >"$D/$role.out" 2>&1 </dev/null &
  job=$!
  # A line before the answer (a runner that gave up waiting) comes next.
  { IFS= read -r -u 3 early && printf "%s" "$early" >"$D/$role.next"; } &
  reader=$!
  wait -n "$job" "$reader"; rc=$?
  if kill -0 "$job" 2>/dev/null; then
    [ -e "$D/$role.next" ] || exit 1
    wait "$job"; rc=$?
  fi
  kill "$reader" 2>/dev/null; wait "$reader" 2>/dev/null; job=""
  if [ -e "$D/$role.next" ]; then next=$(cat "$D/$role.next"); rm -f "$D/$role.next"; fi
  cat "$D/$role.out"; printf "\n@@END %s %s\n" "$id" "$rc"
done
"#;

pub struct RemoteDom0 {
    name: String,
    index: u8,
    ssh: String,
    command: Mutex<(Channel, Child)>,
    sampler: Mutex<(Channel, Child)>,
    layout: Layout,
    versions: Versions,
    opened_ms: u64,
}

impl RemoteDom0 {
    /// Opens session `session` on lab host `host` for the domU of UUID
    /// `domu`, and copies `kernel` and `initrd` there.
    pub fn open(
        host: &lab::Host,
        session: &str,
        domu: &uuid::Uuid,
        kernel: &std::path::Path,
        initrd: &std::path::Path,
    ) -> Result<RemoteDom0> {
        let destination = host.ssh.clone().with_context(|| {
            format!("host {} has no `ssh` in the inventory: a Xen host is driven through its dom0 over ssh", host.name)
        })?;
        let dir = format!("{SESSIONS_DIR}/{session}");
        let started = Instant::now();
        let server = |role: &str| -> Result<(Channel, Child)> {
            let script = SERVER
                .replace("@DIR@", &dir)
                .replace("@ROLE@", role)
                .replace("@UUID@", &domu.to_string());
            let mut child = ssh(&destination)
                .arg(format!("bash -c '{script}'"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("host {}: starting ssh {destination}", host.name))?;
            let channel = Channel::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
            // What ssh or the server said on its error output, for errors.
            let errors = std::sync::Arc::new(Mutex::new(String::new()));
            let (stderr, e) = (child.stderr.take().unwrap(), errors.clone());
            std::thread::spawn(move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut e = e.lock().unwrap();
                    if e.len() < 4096 {
                        e.push_str(&l);
                        e.push(' ');
                    }
                }
            });
            let mut said = Vec::new();
            let deadline = Instant::now() + OPEN_TIMEOUT;
            loop {
                match channel.line(deadline.saturating_duration_since(Instant::now())) {
                    Line::Text(l) if l == channel::READY => return Ok((channel, child)),
                    Line::Text(l) => said.push(l),
                    Line::TimedOut | Line::Closed => {
                        let _ = child.kill();
                        let _ = child.wait();
                        said.extend(
                            Some(errors.lock().unwrap().trim().to_string())
                                .filter(|e| !e.is_empty()),
                        );
                        bail!(
                            "host {}: no Xen session over `ssh {destination}` within {} s{}",
                            host.name,
                            OPEN_TIMEOUT.as_secs(),
                            if said.is_empty() {
                                " (does root log in there by key?)".to_string()
                            } else {
                                format!(": {}", said.join(" | "))
                            }
                        )
                    }
                }
            }
        };
        let command = server("command")?;
        let sampler = server("sampler")?;
        let mut dom0 = RemoteDom0 {
            name: host.name.clone(),
            index: host.index,
            ssh: destination,
            command: Mutex::new(command),
            sampler: Mutex::new(sampler),
            layout: Layout {
                kernel: format!("{dir}/guest/vmlinuz"),
                initrd: format!("{dir}/guest/initrd.gz"),
                bridge: host.bridge.clone(),
                vif_script: None,
                serial_log: format!("{dir}/run/serial.log"),
                console_logs: "/var/log/xen/console".into(),
                config: format!("{dir}/{}.cfg", super::DOMAIN_NAME),
            },
            versions: Versions::default(),
            opened_ms: 0,
        };
        dom0.feed(
            "bash -s",
            tools_installer(&dir).into_bytes(),
            "installing the tools",
        )?;
        let info = dom0.check("xl info", Duration::from_secs(60))?;
        let tools = dom0
            .sh(
                "dpkg-query -W -f '${Version}' xen-utils-common 2>/dev/null || xl info | sed -n 's/^xen_version *: //p'",
                Duration::from_secs(20),
            )
            .map(|a| a.output.trim().to_string())
            .unwrap_or_default();
        dom0.versions = Versions::from_xl_info(&info, format!("xl ({tools})"));
        for (local, remote) in [(kernel, &dom0.layout.kernel), (initrd, &dom0.layout.initrd)] {
            let bytes = std::fs::read(local).with_context(|| format!("{}", local.display()))?;
            dom0.feed(
                &format!("cat > {remote}"),
                bytes,
                &format!("copying {}", local.display()),
            )?;
        }
        dom0.opened_ms = started.elapsed().as_millis() as u64;
        Ok(dom0)
    }

    /// Runs `remote` in dom0 over a connection of its own, `input` its
    /// standard input (`what` says what for, in errors).
    fn feed(&self, remote: &str, input: Vec<u8>, what: &str) -> Result<()> {
        let mut child = ssh(&self.ssh)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        if !crate::sh::wait_exit(&mut child, COPY_TIMEOUT) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "host {}: {what} took over {} s",
                self.name,
                COPY_TIMEOUT.as_secs()
            );
        }
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            bail!("host {}: {what}: ssh {status}: {}", self.name, err.trim());
        }
        Ok(())
    }
}

impl Dom0 for RemoteDom0 {
    fn sh(&self, command: &str, timeout: Duration) -> Result<Answer> {
        let mut c = self.command.lock().unwrap();
        c.0.sh(command, timeout, &|| {
            format!("host {}: the ssh session to dom0 ended", self.name)
        })
    }

    fn index(&self) -> u8 {
        self.index
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn came_up(&self) -> String {
        format!("dom0 over ssh, session ready in {} ms", self.opened_ms)
    }

    /// The Xen host's CPU and memory as the guest's hypervisor side uses
    /// them: dom0's CPU time (the toolstack's and back-ends' work) plus
    /// the domU's, and dom0's memory in use plus the domU's.
    fn report(&self) -> Option<Reported> {
        let asked = Instant::now();
        let mut s = self.sampler.lock().unwrap();
        let a = s
            .0
            .sh(
                &format!(
                    "awk '/^cpu /{{print $2+$3+$4+$7+$8}}' /proc/stat; awk '/^MemTotal/{{t=$2}} /^MemAvailable/{{a=$2}} END{{print t-a}}' /proc/meminfo; xl list | awk 'NR > 1 && ($1 == \"{d}\" || index($1, \"{d}--\") == 1) {{m+=$3; t+=$6}} END{{print m+0, t+0}}'",
                    d = super::DOMAIN_NAME
                ),
                SAMPLE_TIMEOUT,
                &String::new,
            )
            .ok()?;
        let figures = parse_report(&a.output)?;
        Some(Reported {
            cpu_ns: figures.0,
            rss_mib: Some(figures.1),
            asked,
            at: Instant::now(),
        })
    }
}

/// From the sampler's three lines: (CPU ns, MiB). dom0's /proc/stat counts
/// in USER_HZ (100 per second on Linux x86).
fn parse_report(text: &str) -> Option<(u64, f64)> {
    let mut lines = text.lines();
    let dom0_ticks: f64 = lines.next()?.trim().parse().ok()?;
    let dom0_kib: f64 = lines.next()?.trim().parse().ok()?;
    let mut domu = lines.next()?.split_whitespace();
    let domu_mib: f64 = domu.next()?.parse().ok()?;
    let domu_s: f64 = domu.next()?.parse().ok()?;
    Some((
        ((dom0_ticks / 100.0 + domu_s) * 1e9) as u64,
        dom0_kib / 1024.0 + domu_mib,
    ))
}

impl Drop for RemoteDom0 {
    /// Closing the sessions' input is the end of the case for dom0; it
    /// cleans up then, and ssh ends.
    fn drop(&mut self) {
        for m in [&self.sampler, &self.command] {
            let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
            let (channel, child) = &mut *g;
            channel.close();
            crate::sh::wait_exit(child, Duration::from_secs(30));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The end of a tool's text in the installer (a quoted here-document).
const TOOL_END: &str = "MIGSUITE_TOOL_END";

/// A bash script that writes `dom0::TOOLS` into session `dir`'s bin/.
fn tools_installer(dir: &str) -> String {
    dom0::TOOLS
        .iter()
        .map(|(name, text)| {
            debug_assert!(!text.contains(TOOL_END));
            format!("cat > {dir}/bin/{name} <<'{TOOL_END}'\n{text}{TOOL_END}\nchmod 700 {dir}/bin/{name}\n")
        })
        .collect::<Vec<_>>()
        .concat()
        + "true\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_dom0_and_the_domu() {
        // 12.34 s of dom0, 1.5 s of the domU; 512 MiB of dom0, 256 of the domU.
        let (ns, mib) = parse_report("1234\n524288\n256 1.5\n").unwrap();
        assert_eq!(ns, 13_840_000_000);
        assert!((mib - 768.0).abs() < 1e-9);
        // No domU (yet): its figures are zeros.
        assert!(parse_report("1\n1024\n0 0\n").is_some());
        assert_eq!(parse_report("1\n"), None);
    }

    #[test]
    fn the_installer_writes_every_tool() {
        let text = tools_installer("/d");
        for (name, tool) in dom0::TOOLS {
            assert!(text.contains(&format!(
                "cat > /d/bin/{name} <<'{TOOL_END}'\n{tool}{TOOL_END}\n"
            )));
            assert!(!tool.contains(TOOL_END));
        }
    }

    #[test]
    fn the_server_script_has_no_single_quote() {
        // It is given to the remote shell inside single quotes.
        assert!(!SERVER.contains('\''));
    }

    /// The sampler's server, run here by bash in a directory of its own.
    fn sampler_server(dir: &std::path::Path) -> Child {
        let script = SERVER
            .replace("@DIR@", dir.to_str().unwrap())
            .replace("@ROLE@", "sampler")
            .replace("@UUID@", "none");
        std::process::Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn the_server_answers_and_ends_with_its_input_even_mid_command() {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let mut server = sampler_server(dir.path());
        let mut input = server.stdin.take().unwrap();
        let mut output = BufReader::new(server.stdout.take().unwrap());
        let mut answer = String::new();
        writeln!(input, "a1 10 echo one; exit 7").unwrap();
        while !answer.contains("@@END a1") {
            assert_ne!(output.read_line(&mut answer).unwrap(), 0, "{answer}");
        }
        assert_eq!(answer, "@@READY\none\n\n@@END a1 7\n");
        // A command of minutes, then the runner's end: the server goes at
        // once, not when the command ends.
        writeln!(input, "a2 130 sleep 120").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let closed = Instant::now();
        drop(input);
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            assert!(closed.elapsed() < Duration::from_secs(20), "still serving");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success());
    }
}
