//! What each host of a lab offers, asked of its libvirtd alone: the first
//! thing to run against a lab (`migsuite hosts`), real or simulated. It
//! says what libvirt reports (versions, the machine, the accelerator), and
//! whether what the inventory names is there (the storage pool, the bridge,
//! the driver each backend listed needs).

use super::libvirtd::{version, Connection};
use super::pool::Pool;
use crate::case::Hypervisor;
use crate::inventory;
use crate::measure::Machine;
use std::fmt;

/// One thing asked of a host, and its answer, or why there is none.
pub struct Finding {
    pub what: &'static str,
    pub answer: Result<String, String>,
}

/// A host's findings.
pub struct Survey {
    pub host: String,
    pub uri: String,
    pub findings: Vec<Finding>,
}

impl Survey {
    /// Whether every question had an answer.
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| f.answer.is_ok())
    }
}

impl fmt::Display for Survey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "host {} ({}):", self.host, self.uri)?;
        for finding in &self.findings {
            match &finding.answer {
                Ok(answer) => writeln!(f, "  {}: {answer}", finding.what)?,
                Err(problem) => writeln!(f, "  {}: PROBLEM: {problem}", finding.what)?,
            }
        }
        Ok(())
    }
}

/// A host that could not be asked anything.
pub fn unreachable(host: &inventory::Host, why: String) -> Survey {
    Survey {
        host: host.name.clone(),
        uri: host.uri.clone(),
        findings: vec![Finding {
            what: "connection",
            answer: Err(why),
        }],
    }
}

/// Asks host `host`'s daemon, behind `conn`, what the runner needs of it.
/// On a simulated host the pool is made if missing, as a case makes it.
pub fn survey(conn: Connection, host: &inventory::Host, simulated: bool) -> Survey {
    let err = |e: virt::error::Error| e.message().to_string();
    let driver = conn.driver_type().map_err(err);
    let capabilities = conn.capabilities().map_err(err);
    let mut findings = vec![
        Finding {
            what: "libvirt",
            answer: conn.lib_version().map(version).map_err(err),
        },
        Finding {
            what: "hypervisor",
            answer: driver.clone().and_then(|d| {
                let v = conn.hyp_version().map_err(err)?;
                Ok(format!("{d} {}", version(v)))
            }),
        },
        Finding {
            what: "machine",
            answer: machine(&conn, capabilities.as_deref().ok())
                .map(|m| m.to_string())
                .map_err(err),
        },
        Finding {
            what: "accelerator",
            answer: capabilities.map(|caps| accelerator(&caps, simulated)),
        },
        Finding {
            what: "bridge",
            answer: if !simulated
                && host
                    .backends
                    .iter()
                    .any(|b| crate::backend::capabilities(*b).bridge_in_dom0)
            {
                bridge_in_dom0(host)
            } else {
                bridge(&conn, &host.bridge, simulated)
            },
        },
    ];
    for backend in &host.backends {
        let answer = match backend {
            Hypervisor::Openvz if !simulated => criu_on(host),
            Hypervisor::XenPv | Hypervisor::XenHvm if !simulated => xen_on(host, *backend),
            _ => runs(*backend, driver.as_deref(), simulated),
        };
        findings.push(Finding {
            what: backend.name(),
            answer,
        });
    }
    findings.push(Finding {
        what: "pool",
        answer: pool(conn, &host.pool, simulated),
    });
    Survey {
        host: host.name.clone(),
        uri: host.uri.clone(),
        findings,
    }
}

/// The host's machine as its libvirt tells: CPUs, their model (from the
/// capabilities, where given), memory and the host's UUID.
pub fn machine(
    conn: &Connection,
    capabilities: Option<&str>,
) -> Result<Machine, virt::error::Error> {
    let node = conn.node_info()?;
    let host = capabilities.and_then(host_section);
    Ok(Machine {
        cpus: node.cpus,
        cpu: match host.and_then(host_cpu_model) {
            Some(model) => format!("{}, {model}", node.model),
            None => node.model,
        },
        memory_mib: node.memory >> 10,
        uuid: capabilities.and_then(host_uuid),
    })
}

/// The `<host>` element of libvirt's capabilities XML: the guests' CPUs
/// come after it.
fn host_section(capabilities: &str) -> Option<&str> {
    let host = &capabilities[capabilities.find("<host>")?..];
    Some(&host[..host.find("</host>")?])
}

/// The text of the first element `name` in `xml`.
fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}");
    let body = &xml[xml.find(&open)?..];
    let text = &body[body.find('>')? + 1..];
    Some(text[..text.find('<')?].trim())
}

/// The host CPU's vendor and model from the capabilities' `<host>`
/// (`<cpu>...<model>EPYC-Rome</model><vendor>AMD</vendor>`).
fn host_cpu_model(host: &str) -> Option<String> {
    let cpu = &host[host.find("<cpu>")?..];
    let cpu = &cpu[..cpu.find("</cpu>")?];
    let model = element(cpu, "model")?;
    Some(match element(cpu, "vendor") {
        Some(vendor) => format!("{vendor} {model}"),
        None => model.to_string(),
    })
}

/// The host's UUID from libvirt's capabilities XML (`<host><uuid>`): the
/// machine's SMBIOS UUID, or the daemon's `host_uuid`.
pub fn host_uuid(capabilities: &str) -> Option<String> {
    let uuid = element(host_section(capabilities)?, "uuid")?;
    uuid::Uuid::parse_str(uuid).ok().map(|u| u.to_string())
}

/// What libvirt offers guests to run on, from its capabilities; on a
/// simulated host, which is this machine, also whether a stock guest
/// kernel can use KVM (migsuite's own check, as each KVM case makes it).
fn accelerator(capabilities: &str, simulated: bool) -> String {
    if !crate::backend::kvm::accel::offers_kvm(capabilities) {
        return "libvirt offers no KVM: guests run under TCG (emulated CPUs)".into();
    }
    match crate::backend::kvm::accel::kvm_unusable() {
        Some(why) if simulated => {
            format!("libvirt offers KVM, but migsuite runs guests under TCG here: {why}")
        }
        _ => "libvirt offers KVM for guests".into(),
    }
}

/// Whether the host's network interfaces include bridge `name`, from
/// libvirt's node devices (a simulated host's is migsuite's own).
fn bridge(conn: &Connection, name: &str, simulated: bool) -> Result<String, String> {
    if simulated {
        return Ok(format!(
            "`{name}`, built by migsuite in the host's namespace"
        ));
    }
    let devices = conn
        .list_all_node_devices(virt::sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
        .map_err(|e| {
            format!(
                "cannot tell whether `{name}` exists: libvirt lists no network devices ({}; \
                 the host's node-device driver, e.g. Debian's libvirt-daemon-driver-nodedev, \
                 lists them)",
                e.message()
            )
        })?;
    let interface = format!("<interface>{name}</interface>");
    let found = devices
        .iter()
        .any(|d| d.xml_desc(0).is_ok_and(|xml| xml.contains(&interface)));
    if found {
        Ok(format!("`{name}` present"))
    } else {
        Err(format!(
            "no network interface `{name}` on the host: name the bridge guests' NICs join"
        ))
    }
}

/// Whether a Xen host's dom0 has the bridge, asked over its `ssh`: domUs
/// join it through Xen's vif script, not libvirt, whose node devices need
/// not list it (Debian's libvirt in a dom0 did not).
fn bridge_in_dom0(host: &inventory::Host) -> Result<String, String> {
    let name = &host.bridge;
    if name.contains('\'') {
        return Err(format!(
            "`{name}`: a bridge name with a quote is not asked for"
        ));
    }
    let ask = format!("test -d '/sys/class/net/{name}/bridge' && echo present || echo absent");
    let said =
        in_dom0(host, &ask).map_err(|e| format!("cannot ask dom0 for bridge `{name}` {e}"))?;
    if said.trim() == "present" {
        Ok(format!("`{name}` present in dom0"))
    } else {
        Err(format!(
            "no bridge `{name}` in dom0: name the bridge the domUs' vifs join"
        ))
    }
}

/// Whether the host can run `backend`, given its libvirt driver: a real
/// host runs the KVM rows through QEMU's (the others are asked over ssh).
fn runs(
    backend: Hypervisor,
    driver: Result<&str, &String>,
    simulated: bool,
) -> Result<String, String> {
    if simulated {
        return Ok(match backend {
            Hypervisor::KvmFv | Hypervisor::KvmPv => "QEMU guests of this host's libvirtd",
            Hypervisor::XenPv | Hypervisor::XenHvm => "nested Xen hosts migsuite starts",
            Hypervisor::Openvz => "containers migsuite moves with CRIU",
        }
        .into());
    }
    let driver = driver.map_err(|e| e.clone())?;
    if driver.eq_ignore_ascii_case("QEMU") {
        Ok(format!("libvirt's {driver} driver"))
    } else {
        Err(format!(
            "{backend} needs libvirt's QEMU driver, and the URI reaches its {driver} driver"
        ))
    }
}

/// What `command` prints in a Xen host's dom0, run over its `ssh`; the
/// error says "over ssh <destination>: why".
fn in_dom0(host: &inventory::Host, command: &str) -> Result<String, String> {
    let ssh = host
        .ssh
        .as_deref()
        .ok_or("the Xen rows need the host's `ssh`")?;
    let mut args = crate::sh::SSH_OPTIONS.to_vec();
    args.extend(["--", ssh, command]);
    crate::sh::run("ssh", &args).map_err(|e| format!("over ssh {ssh}: {e:#}"))
}

/// What a case runs in a real dom0 besides `xl`, and what for.
const DOM0_TOOLS: [(&str, &str); 2] = [
    (
        "python3",
        "the migration stream's receiver; Debian's xen-utils depends on it",
    ),
    ("pv", "counting the migration stream's bytes"),
];
/// How dom0 names a tool it lacks, after `xl info`.
const MISSING: &str = "@@missing:";

/// The tools of DOM0_TOOLS that dom0 said it lacks, with what for.
fn missing_tools(said: &str) -> Vec<String> {
    said.lines()
        .filter_map(|l| l.trim().strip_prefix(MISSING))
        .filter_map(|t| DOM0_TOOLS.iter().find(|(name, _)| *name == t))
        .map(|(name, why)| format!("`{name}` ({why})"))
        .collect()
}

/// What a real host's Xen is, asked of its dom0 over its `ssh`, where a
/// case drives `xl`, and whether dom0 has the other tools a case runs
/// there; an HVM domU needs Xen's hvm capability.
fn xen_on(host: &inventory::Host, backend: Hypervisor) -> Result<String, String> {
    let ask = format!(
        "xl info && for t in {}; do command -v $t >/dev/null || echo {MISSING}$t; done",
        DOM0_TOOLS.map(|(t, _)| t).join(" ")
    );
    let info = in_dom0(host, &ask).map_err(|e| format!("no Xen toolstack answers in dom0 {e}"))?;
    let missing = missing_tools(&info);
    if !missing.is_empty() {
        return Err(format!("dom0 lacks {}", missing.join(", ")));
    }
    let v = crate::backend::xen::Versions::from_xl_info(&info, String::new());
    if backend == Hypervisor::XenHvm && !v.caps.contains("hvm") {
        return Err(format!(
            "{} offers no HVM guests here (xen_caps: {}): the CPU needs VT-x or AMD-V, enabled",
            v.xen, v.caps
        ));
    }
    // (There is an `ssh`: dom0 answered over it.)
    let ssh = host.ssh.as_deref().unwrap_or_default();
    Ok(format!("{} (caps {}), xl over ssh {ssh}", v.xen, v.caps))
}

/// What a real host's CRIU can do, asked by a `criu-host` session over
/// its `ssh`, as a case asks it.
fn criu_on(host: &inventory::Host) -> Result<String, String> {
    use crate::backend::criu::remote::{session, Ask, Reply};
    let ssh = host.ssh.as_deref().ok_or("openvz needs the host's `ssh`")?;
    let asked = session::HostSession::open(&host.name, ssh, &uuid::Uuid::new_v4().to_string())
        .map_err(|e| format!("{e:#}"))?
        .ask(Ask::Describe, session::ANSWER_TIMEOUT)?;
    let Reply::Described(d) = asked else {
        return Err(format!("unexpected answer {asked:?}"));
    };
    let criu = d.criu?;
    Ok(format!(
        "CRIU {} ({}) on kernel {}, over ssh {ssh}; {}; {}; stop-and-copy",
        criu.version,
        criu.origin,
        d.kernel,
        match criu.dirty_tracking {
            Ok(()) => "tracks dirty pages: precopy".to_string(),
            Err(why) => format!("no precopy (tracks no dirty pages: {why})"),
        },
        match criu.lazy_pages {
            Ok(()) => "serves lazy pages: postcopy".to_string(),
            Err(why) => format!("no postcopy ({why})"),
        }
    ))
}

/// The pool's state and room.
fn pool(conn: Connection, name: &str, simulated: bool) -> Result<String, String> {
    let pool = Pool::open(conn, name, simulated).map_err(|e| format!("{e:#}"))?;
    let room = pool.room().map_err(|e| format!("{e:#}"))?;
    let gib = |b: u64| b as f64 / f64::from(1 << 30);
    Ok(format!(
        "`{name}`, active, {:.1} GiB free of {:.1} GiB, at {}",
        gib(room.available),
        gib(room.capacity),
        room.path
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dom0_without_the_tools_a_case_runs_says_which_and_why() {
        let said = "host : c\nxen_version : 4.17.5\n@@missing:python3\n@@missing:other\n";
        assert_eq!(
            missing_tools(said),
            ["`python3` (the migration stream's receiver; Debian's xen-utils depends on it)"]
        );
        assert!(missing_tools("host : c\nxen_version : 4.17.5\n").is_empty());
    }

    #[test]
    fn a_backend_needs_the_driver_that_runs_it() {
        assert!(runs(Hypervisor::KvmPv, Ok("QEMU"), false).is_ok());
        let err = runs(Hypervisor::KvmFv, Ok("LXC"), false).unwrap_err();
        assert!(err.contains("kvm-fv needs libvirt's QEMU driver"), "{err}");
        assert!(runs(Hypervisor::Openvz, Ok("QEMU"), true).is_ok());
        let down = "connection lost".to_string();
        assert_eq!(runs(Hypervisor::KvmFv, Err(&down), false), Err(down));
    }

    #[test]
    fn the_host_cpu_is_read_from_the_hosts_cpu_not_a_guests() {
        let caps = "<capabilities>\n  <host>\n    <uuid>4c4c4544-0042-4d10-8031-b4c04f4e3432</uuid>\n    <cpu>\n                          <arch>x86_64</arch>\n      <model>EPYC-Rome</model>\n                          <vendor>AMD</vendor>\n    </cpu>\n    <secmodel>\n                          <model>apparmor</model>\n    </secmodel>\n  </host>\n  <guest>\n                        <cpu><model>qemu64</model></cpu>\n  </guest>\n</capabilities>";
        let host = host_section(caps).unwrap();
        assert_eq!(host_cpu_model(host).as_deref(), Some("AMD EPYC-Rome"));
        assert_eq!(
            element(host, "uuid"),
            Some("4c4c4544-0042-4d10-8031-b4c04f4e3432")
        );
        let no_model = "<capabilities><host><cpu><arch>x86_64</arch></cpu>\
                        <secmodel><model>apparmor</model></secmodel></host></capabilities>";
        let host = host_section(no_model).unwrap();
        assert_eq!(host_cpu_model(host), None);
        assert_eq!(element(host, "uuid"), None);
    }

    #[test]
    fn the_host_uuid_is_the_host_s() {
        let caps = "<capabilities><host>\n<uuid>52A1E2C4-0000-4000-8000-0123456789AB</uuid>\
                    </host><guest><uuid>x</uuid></guest></capabilities>";
        assert_eq!(
            host_uuid(caps).as_deref(),
            Some("52a1e2c4-0000-4000-8000-0123456789ab")
        );
        assert_eq!(
            host_uuid("<capabilities><host><uuid>u</uuid></host></capabilities>"),
            None
        );
    }
}
