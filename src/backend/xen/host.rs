//! The nested Xen lab host: a QEMU VM (TCG) running the Xen hypervisor and
//! a dom0 from an initramfs, booted once per process and reused by every Xen
//! case of it.
//!
//! Its QEMU runs in a network namespace of its own, anonymous, held by a
//! keeper thread that lives as long as the process: QEMU's parent is that
//! thread and QEMU has PR_SET_PDEATHSIG = SIGKILL, so however the process
//! ends (normal exit, Ctrl-C's exit, SIGKILL), QEMU goes with it and the
//! namespace with QEMU. Nothing of it lives in the file system: the command
//! channel is an abstract unix socket of that namespace.
//!
//! There is one per lab host (index 0 behind "a", 1 behind "b"). Per case,
//! `attach` connects it to its lab host with two veth pairs from the Xen
//! host's namespace (each bridged there with one of QEMU's taps): dom0's
//! first NIC joins the lab host's br0 (dom0's xenbr0, and so its domUs, are
//! on the guest LAN); its second NIC, dom0's own address for migration
//! streams, is routed by the lab host over the migration link to the other
//! Xen host. The lab's ends go with the lab's namespaces when the case ends.

use super::channel::{self, Answer, Channel, Line};
use super::dom0;
use super::toolstack::{Dom0, Layout, Versions};
use crate::case::LinkSpec;
use crate::guest::image::{artifacts_dir, GuestImage};
use crate::lab::{self, network, network::HOST_BRIDGE};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Xen + dom0 boot under TCG, slower with other QEMUs busy beside them:
/// leave room.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
pub const HOST_MEMORY_MIB: u32 = 3072;
pub const DOM0_MEMORY_MIB: u32 = 1024;
const TAP: &str = "xtap0";
const BRIDGE: &str = "xbr0";
/// QEMU's tap and the bridge of dom0's migration NIC (eth1).
const MIGRATION_TAP: &str = "xmtap0";
const MIGRATION_BRIDGE: &str = "xmbr0";
/// dom0's NIC for migration streams (eth0 is xenbr0's uplink).
const DOM0_MIGRATION_NIC: &str = "eth1";

/// Longer than any job of the keeper takes (host commands are bounded by
/// sh::run's own timeout).
const KEEPER_TIMEOUT: Duration = Duration::from_secs(120);

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside the Xen host's network namespace, for the process's
/// lifetime: QEMU's parent, and where `ip` runs for that namespace.
struct Keeper {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Keeper {
    fn start() -> Result<Keeper> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("migsuite-xen-host".into())
            .spawn(move || {
                let r = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string());
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if !ok {
                    return;
                }
                // Never returns while the process lives: QEMU's death signal
                // fires when this thread ends.
                for job in rx {
                    job();
                }
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            })?;
        ready_rx
            .recv()?
            .map_err(|e| anyhow!("unshare(CLONE_NEWNET) for the Xen host: {e}"))?;
        Ok(Keeper {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on the keeper thread, in the Xen host's namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .lock()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow!("the Xen host's keeper thread is gone"))?;
        rx.recv_timeout(KEEPER_TIMEOUT).map_err(|e| {
            anyhow!(
                "the Xen host's keeper thread did not answer within {} s: {e}",
                KEEPER_TIMEOUT.as_secs()
            )
        })
    }

    fn exec(&self, program: &'static str, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.run(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::sh::run(program, &a)
        })?
    }
}

pub struct XenHost {
    keeper: Keeper,
    qemu: Mutex<Child>,
    qemu_pid: i32,
    channel: Mutex<Channel>,
    /// Xen's and dom0's serial console, as QEMU printed it.
    console: Arc<Mutex<Vec<u8>>>,
    pub boot_ms: u64,
    versions: Versions,
    layout: Layout,
    /// Which lab host it stands behind (0 or 1): names its addresses.
    pub index: u8,
    pub cpus: usize,
    link_seq: AtomicU32,
}

impl XenHost {
    /// Boots the Xen host; returns once dom0's command channel answers.
    /// `cpus`: its vCPUs, which are dom0's too.
    pub fn boot(
        guest: &GuestImage,
        index: u8,
        cpus: usize,
        progress: &dyn Fn(&str),
    ) -> Result<XenHost> {
        let dir = artifacts_dir().join("xen");
        let xen = dir.join("xen");
        anyhow::ensure!(
            xen.exists(),
            "no Xen hypervisor in {} (run ci/setup-xen.sh)",
            dir.display()
        );
        let initrd = dom0::initramfs(guest).context("building the dom0 initramfs")?;
        let kernel = &guest.kernel;
        for p in [&xen, kernel, &initrd] {
            anyhow::ensure!(
                !p.to_string_lossy().contains(','),
                "{}: QEMU's -initrd list cannot take a comma",
                p.display()
            );
        }
        let keeper = Keeper::start()?;
        keeper.exec("ip", &["link", "set", "lo", "up"])?;
        keeper.exec("ip", &["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        keeper.exec("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        keeper.exec("ip", &["link", "set", TAP, "master", BRIDGE, "up"])?;
        keeper.exec("ip", &["link", "set", BRIDGE, "up"])?;
        keeper.exec(
            "ip",
            &["tuntap", "add", "dev", MIGRATION_TAP, "mode", "tap"],
        )?;
        keeper.exec("ip", &["link", "add", MIGRATION_BRIDGE, "type", "bridge"])?;
        keeper.exec(
            "ip",
            &[
                "link",
                "set",
                MIGRATION_TAP,
                "master",
                MIGRATION_BRIDGE,
                "up",
            ],
        )?;
        keeper.exec("ip", &["link", "set", MIGRATION_BRIDGE, "up"])?;

        // Unique in the process: two lab pairs each boot a Xen host `index`.
        let ctl_name = format!(
            "migsuite-xen-{}-{index}-{}-ctl",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let args: Vec<String> = vec![
            "-name".into(),
            format!("migsuite-xen-host-{index}"),
            "-accel".into(),
            "tcg".into(),
            // qemu64 + SVM/NPT: dom0 boots and Xen reports "HVM: SVM
            // enabled"; -cpu max or EPYC kill dom0 (Unhandled #PF).
            "-cpu".into(),
            "qemu64,+svm,+npt".into(),
            "-smp".into(),
            cpus.to_string(),
            "-m".into(),
            HOST_MEMORY_MIB.to_string(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            xen.to_string_lossy().into_owned(),
            "-append".into(),
            format!(
                "dom0_mem={DOM0_MEMORY_MIB}M,max:{DOM0_MEMORY_MIB}M dom0_max_vcpus={cpus} bootscrub=0 console=com1 com1=115200,8n1 noreboot loglvl=warning guest_loglvl=all"
            ),
            "-initrd".into(),
            format!("{} console=hvc0 loglevel=4,{}", kernel.display(), initrd.display()),
            "-netdev".into(),
            format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac=52:54:00:e0:00:{:02x}", 1 + index),
            // With its offloads (see `attach`).
            "-netdev".into(),
            format!("tap,id=n1,ifname={MIGRATION_TAP},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n1,mac=52:54:00:e1:00:{:02x}", 1 + index),
            "-device".into(),
            "virtio-serial-pci".into(),
            "-chardev".into(),
            format!("socket,id=ctl,path={ctl_name},abstract=on,server=on,wait=off"),
            "-device".into(),
            format!("virtserialport,chardev=ctl,name={}", dom0::CTL_PORT),
        ];
        let started = Instant::now();
        progress(&format!(
            "booting nested Xen host {index} (QEMU TCG, {HOST_MEMORY_MIB} MiB, {cpus} vCPUs)"
        ));
        let mut child = keeper
            .run(move || {
                use std::os::unix::process::CommandExt;
                let mut cmd = Command::new("qemu-system-x86_64");
                cmd.args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                cmd.spawn()
            })?
            .context("starting qemu-system-x86_64 for the Xen host")?;
        let qemu_pid = child.id() as i32;
        let console = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = console.clone();
            std::thread::spawn(move || {
                let mut out = out;
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    console.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let mut host_child = child;
        let tail = |console: &Arc<Mutex<Vec<u8>>>| {
            let c = console.lock().unwrap();
            let text = String::from_utf8_lossy(&c);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };

        // The channel: connect (in the host's namespace: abstract sockets
        // are per namespace), then wait for dom0's greeting.
        let deadline = started + BOOT_TIMEOUT;
        let stream = loop {
            if let Some(status) = host_child.try_wait()? {
                bail!(
                    "the Xen host's QEMU exited ({status}) while booting:\n{}",
                    tail(&console)
                );
            }
            let name = ctl_name.clone();
            let r = keeper.run(move || {
                SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| UnixStream::connect_addr(&a))
            })?;
            match r {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => bail!("cannot connect to the Xen host's command channel: {e}"),
            }
        };
        let channel = Channel::new(stream.try_clone()?, stream);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = host_child.kill();
                let _ = host_child.wait();
                bail!(
                    "the Xen host did not come up within {} s; its console ends with:\n{}",
                    BOOT_TIMEOUT.as_secs(),
                    tail(&console)
                );
            }
            match channel.line(left.min(Duration::from_secs(2))) {
                Line::Text(l) if l.trim() == channel::READY => break,
                Line::Text(_) => {}
                Line::TimedOut => {
                    if let Some(status) = host_child.try_wait()? {
                        bail!(
                            "the Xen host's QEMU exited ({status}) while booting:\n{}",
                            tail(&console)
                        );
                    }
                }
                Line::Closed => bail!(
                    "the Xen host's command channel closed while booting:\n{}",
                    tail(&console)
                ),
            }
        }
        let boot_ms = started.elapsed().as_millis() as u64;
        let host = XenHost {
            keeper,
            qemu: Mutex::new(host_child),
            qemu_pid,
            channel: Mutex::new(channel),
            console,
            boot_ms,
            versions: Versions::default(),
            layout: Layout {
                kernel: dom0::DOMU_KERNEL.into(),
                initrd: dom0::DOMU_INITRD.into(),
                bridge: dom0::BRIDGE.into(),
                vif_script: Some(dom0::VIF_SCRIPT_NAME),
                serial_log: format!(
                    "/var/log/xen/console/guest-{}-serial.log",
                    super::DOMAIN_NAME
                ),
                console_logs: "/var/log/xen/console".into(),
                config: format!("/run/{}.cfg", super::DOMAIN_NAME),
            },
            index,
            cpus,
            link_seq: AtomicU32::new(0),
        };
        let info = host.check("xl info", Duration::from_secs(60))?;
        let tools = std::fs::read_to_string(dir.join("VERSION")).unwrap_or_default();
        let versions = Versions::from_xl_info(
            &info,
            format!(
                "xl (xen-utils {})",
                tools
                    .lines()
                    .find_map(|l| l.strip_prefix("tools="))
                    .unwrap_or("?")
            ),
        );
        progress(&format!(
            "Xen host {index} up in {} ms: {}, caps {}",
            boot_ms, versions.xen, versions.caps
        ));
        Ok(XenHost { versions, ..host })
    }

    pub fn qemu_pid(&self) -> i32 {
        self.qemu_pid
    }

    pub fn alive(&self) -> bool {
        matches!(self.qemu.lock().unwrap().try_wait(), Ok(None))
    }

    /// The serial console so far (Xen and dom0).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().unwrap()).into_owned()
    }

    /// Wires the host to its lab host with the case's link: dom0's xenbr0
    /// into the host's br0 (the guest LAN), dom0's migration NIC routed by
    /// the host over the migration link. MTU on every hop; offloads as the
    /// case says on the LAN. The migration NIC keeps its offloads whatever
    /// the case says: a packet costs a nested dom0 far more than it costs a
    /// host (every interrupt goes through Xen under TCG), so dom0 hands
    /// 64 KiB segments to the lab host, whose kernel cuts them into
    /// MTU-sized packets on the wire-like link, and the
    /// destination's lab host merges them again (GRO) for its dom0: the
    /// per-packet work is a host kernel's, as for a KVM row's QEMU.
    pub fn attach(&self, lab_host: &lab::Host, link: &LinkSpec) -> Result<()> {
        anyhow::ensure!(
            lab_host.index == self.index,
            "Xen host {} cannot stand behind lab host {}",
            self.index,
            lab_host.name
        );
        let n = self.link_seq.fetch_add(1, Ordering::Relaxed);
        let simulated = lab_host.simulated()?;
        let lan = self.uplink(
            &format!("xup{n}"),
            &format!("xen{n}"),
            (TAP, BRIDGE),
            (simulated, link.mtu),
            link.offloads,
        )?;
        simulated
            .netns
            .exec("ip", &["link", "set", &lan, "master", HOST_BRIDGE, "up"])?;
        let stream = self.uplink(
            &format!("xmup{n}"),
            &format!("xmig{n}"),
            (MIGRATION_TAP, MIGRATION_BRIDGE),
            (simulated, link.mtu),
            true,
        )?;
        network::route_nested(
            &simulated.netns,
            lab_host.index,
            &stream,
            simulated.peer_link_addr,
        )?;
        let mtu = link.mtu;
        let (addr, gateway) = (
            network::nested_addr(self.index),
            network::nested_gateway(self.index),
        );
        let peer_net = network::nested_net(1 - self.index);
        self.check(
            &format!(
                "ip link set eth0 mtu {mtu} && ip link set {bridge} mtu {mtu} && \
                 ip link set {nic} mtu {mtu} up && ip addr flush dev {nic} && \
                 ip addr add {addr}/{len} dev {nic} && \
                 ip route replace {peer_net} via {gateway} dev {nic}",
                bridge = dom0::BRIDGE,
                nic = DOM0_MIGRATION_NIC,
                len = network::PREFIX_LEN,
            ),
            Duration::from_secs(20),
        )?;
        Ok(())
    }

    /// A veth pair from `bridge` (with QEMU's `tap`) in the Xen host's
    /// namespace to `lab_host`, every hop at `mtu`; returns the name of the
    /// lab host's end.
    fn uplink(
        &self,
        ours: &str,
        theirs: &str,
        (tap, bridge): (&str, &str),
        (lab_host, mtu): (&lab::Simulated, u32),
        offloads: bool,
    ) -> Result<String> {
        let mtu = mtu.to_string();
        // A previous case's uplink went with its lab's namespace.
        self.keeper.exec(
            "ip",
            &[
                "link",
                "add",
                ours,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                theirs,
                "mtu",
                &mtu,
                "netns",
                &lab_host.netns.name,
            ],
        )?;
        for dev in [tap, bridge, ours] {
            self.keeper.exec("ip", &["link", "set", dev, "mtu", &mtu])?;
        }
        self.keeper
            .exec("ip", &["link", "set", ours, "master", bridge, "up"])?;
        if !offloads {
            for dev in [tap, ours] {
                // A tap takes the same switches as a veth.
                self.keeper
                    .exec("ethtool", &network::offloads_off_args(dev, true))?;
            }
            lab_host
                .netns
                .exec("ethtool", &network::offloads_off_args(theirs, true))?;
        } else {
            // GRO where packets enter the Xen host: a veth merges only when
            // asked to, and only what its peer sends without TSO.
            self.keeper.exec("ethtool", &["-K", ours, "gro", "on"])?;
            lab_host
                .netns
                .exec("ethtool", &["-K", theirs, "tso", "off"])?;
        }
        Ok(theirs.to_string())
    }

    /// Stops QEMU now (also done by the kernel when the process ends).
    pub fn shutdown(&self) {
        let mut q = self.qemu.lock().unwrap();
        let _ = q.kill();
        let _ = q.wait();
    }
}

impl Dom0 for XenHost {
    fn sh(&self, command: &str, timeout: Duration) -> Result<Answer> {
        self.channel.lock().unwrap().sh(command, timeout, &|| {
            format!(
                "the Xen host's command channel closed (QEMU alive: {})",
                self.alive()
            )
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
        format!("nested, booted in {} ms", self.boot_ms)
    }

    fn machine_console(&self) -> Option<String> {
        Some(self.console())
    }

    fn qemu_pid(&self) -> Option<i32> {
        Some(self.qemu_pid)
    }
}
