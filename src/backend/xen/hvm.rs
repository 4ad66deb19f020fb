//! xen-hvm: what an HVM domU of the agent image needs in the nested Xen host.
//!
//! Measured (nested Xen under QEMU TCG, `-cpu qemu64,+svm,+npt`): with HAP
//! (nested NPT, Xen's default when it finds "HAP detected") SeaBIOS, the
//! linuxboot option ROM and the kernel's decompressor run (the serial console
//! shows "Booting from ROM...", "KASLR disabled: 'nokaslr' on cmdline."; the
//! vCPU was sampled in long mode in the decompressor's gzip CRC loop), then
//! the kernel proper stops before its early console (not one line with
//! `earlyprintk=ttyS0`) and the domain powers off: xl "Domain 1 has shut
//! down, reason code 0 0x0" (Xen powers an HVM domain off when its only vCPU
//! halts with interrupts disabled, which is what the kernel's early-exception
//! halt loop does). The same kernel, command line and memory with `hap=0`
//! (shadow paging, which this Xen is built with) boots to the agent.
//!
//! Loading the kernel and initramfs takes long: qemu-xen's fw_cfg has no DMA
//! under Xen, so the linuxboot ROM reads them with `rep insb` through the
//! device model in dom0, minutes under TCG.
//!
//! `xl migrate` of the HVM domU (log-dirty through shadow paging) works.

use super::toolstack::{Dom0, Layout};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Loading the kernel through the linuxboot ROM (minutes) and the
/// kernel's boot to the agent (PCI and ACPI through the device model) take
/// longer than the runner waits for the agent's hello (which then only
/// covers the agent's own start).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(900);

/// Waits until the HVM domU's kernel runs its init (the agent), as the
/// agent's first line on the serial console says; fails early if the
/// domain stops.
pub fn wait_for_init(h: &dyn Dom0, domid: u32, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let log = &h.layout().serial_log;
    loop {
        let a = h.sh(
            &format!(
                "grep -qF '{}' {log} && echo init; xl list {domid} | tail -n +2",
                crate::wire::AGENT_STARTED
            ),
            Duration::from_secs(30),
        )?;
        if a.output.lines().any(|l| l == "init") {
            return Ok(started.elapsed());
        }
        let state = a
            .output
            .split_whitespace()
            .nth(4)
            .unwrap_or("(gone)")
            .to_string();
        if a.status != 0 || state.contains('s') || state.contains('c') {
            let tail = h
                .sh(&format!("tail -c 1500 {log}"), Duration::from_secs(20))
                .map(|a| a.output)
                .unwrap_or_default();
            bail!("the HVM domU {domid} stopped (xl state {state}) before its kernel ran init; its serial console ends with:\n{tail}");
        }
        if started.elapsed() > timeout {
            bail!(
                "the HVM domU's kernel did not run init within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The xl lines of an HVM domU of the agent image (besides name, kernel,
/// ramdisk, memory and vCPUs).
pub fn config(agent_args: &str, mac: &str, layout: &Layout) -> Vec<String> {
    vec![
        "type=\"hvm\"".into(),
        // Shadow paging: with HAP (nested NPT under TCG) the kernel dies
        // before its first line (see above).
        "hap=0".into(),
        // Warnings only on the serial console, as for the KVM guests: each
        // byte on the emulated UART is two trips to the device model in dom0,
        // with interrupts off while a line is written, which held back the
        // boot to the agent.
        format!("extra=\"console=ttyS0 loglevel=4 {agent_args}\""),
        // Fully virtualised: no Xen platform device, so the guest keeps the
        // emulated e1000 instead of unplugging it for netfront.
        "xen_platform_pci=0".into(),
        // xenconsoled does not log an HVM domU's serial pty: QEMU writes it
        // to a file (the incoming domain of a migration reopens it,
        // truncated: it keeps what the guest printed since).
        format!("serial=\"file:{}\"", layout.serial_log),
        "vnc=0".into(),
        "sdl=0".into(),
        "nographic=1".into(),
        "device_model_version=\"qemu-xen\"".into(),
        "device_model_override=\"/usr/libexec/xen-qemu-system-i386\"".into(),
        format!("vif=[\"{}\"]", super::vif(mac, layout, Some("e1000"))),
    ]
}

#[cfg(test)]
mod probe {
    use super::super::toolstack::Dom0;
    use super::super::{shared_hosts, shutdown_shared_hosts};
    use crate::guest::image::GuestImage;
    use std::io::{BufRead, Write};
    use std::time::{Duration, Instant};

    /// An interactive dom0 shell for experiments: boots the Xen host, then
    /// runs each line written to the FIFO /tmp/xsh/in in dom0 and appends
    /// its output to /tmp/xsh/out ("PUT <local> <dom0 path>" copies a file).
    /// `cargo test --lib xen_dom0_shell -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn xen_dom0_shell() {
        let _lab_lock = crate::runner::exclusive(
            &crate::inventory::Inventory::simulated(
                "simulated",
                crate::inventory::Storage::Shared,
                &crate::backend::rows(),
            ),
            &[0],
            &|m| eprintln!("{m}"),
        )
        .unwrap();
        let image = GuestImage::prepare_with(&["xen_netfront"]).unwrap();
        let h = shared_hosts(&image, 0, &[0]).unwrap().remove(0);
        let dir = std::path::Path::new("/tmp/xsh");
        std::fs::create_dir_all(dir).unwrap();
        let fifo = dir.join("in");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits(0o600).unwrap()).unwrap();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("out"))
            .unwrap();
        writeln!(out, "@@BOOTED {} ms", h.boot_ms).unwrap();
        'outer: loop {
            let f = std::fs::File::open(&fifo).unwrap();
            for line in std::io::BufReader::new(f).lines() {
                let line = line.unwrap();
                if line == "QUIT" {
                    break 'outer;
                }
                if line == "CONSOLE" {
                    let _ = std::fs::write(dir.join("console"), h.console());
                    writeln!(out, "@@DONE CONSOLE").unwrap();
                    continue;
                }
                let t = Instant::now();
                if let Some(rest) = line.strip_prefix("PUT ") {
                    let (local, remote) = rest.split_once(' ').unwrap();
                    let data = std::fs::read(local).unwrap();
                    let r = h.check(&format!("rm -f {remote}"), Duration::from_secs(10));
                    writeln!(out, "{r:?}").unwrap();
                    for chunk in data.chunks(60_000) {
                        let b64 = base64(chunk);
                        if let Err(e) = h.check(
                            &format!("echo {b64} | base64 -d >> {remote}"),
                            Duration::from_secs(60),
                        ) {
                            writeln!(out, "PUT failed: {e:#}").unwrap();
                            break;
                        }
                    }
                    writeln!(out, "@@DONE PUT {} ms", t.elapsed().as_millis()).unwrap();
                    continue;
                }
                match h.sh(&line, Duration::from_secs(600)) {
                    Ok(a) => writeln!(
                        out,
                        "{}\n@@DONE {} ({} ms)",
                        a.output,
                        a.status,
                        t.elapsed().as_millis()
                    ),
                    Err(e) => writeln!(out, "@@DONE ERR {e:#}"),
                }
                .unwrap();
            }
        }
        let _ = std::fs::write(dir.join("console"), h.console());
        shutdown_shared_hosts(None);
    }

    fn base64(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::with_capacity(data.len() * 4 / 3 + 4);
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
