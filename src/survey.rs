//! What each host of a lab offers: the first thing to run against a lab
//! (`migsuite hosts`), real or simulated. It says what the host's libvirtd
//! reports (versions, the machine, the accelerator), and whether what the
//! inventory names is there: the storage pool, the bridge, and what each
//! backend listed needs, asked as that backend says (`HostNeeds`: over
//! ssh, where it drives the host itself).

use crate::backend;
use crate::inventory;
use crate::lab::capabilities::machine;
use crate::lab::libvirtd::{self, version, Connection};
use crate::lab::pool::Pool;
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
            answer: match host
                .backends
                .iter()
                .find_map(|b| backend::descriptor(*b).host_needs.bridge)
            {
                Some(own_check) if !simulated => own_check(host),
                _ => bridge(&conn, &host.bridge, simulated),
            },
        },
    ];
    for row in &host.backends {
        let needs = &backend::descriptor(*row).host_needs;
        let answer = if simulated {
            Ok(needs.simulated.to_string())
        } else {
            (needs.survey)(host, *row, driver.as_deref())
        };
        findings.push(Finding {
            what: row.name(),
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

/// Every host of `inventory` surveyed: a simulated pair built to be asked
/// (pair by pair, held as a case holds it), a real host asked through its
/// URI. Err: the survey stopped (a lab that could not be built).
pub fn survey_lab(inventory: &inventory::Inventory) -> (Vec<Survey>, anyhow::Result<()>) {
    let mut surveys = Vec::new();
    let asked = if inventory.simulated {
        crate::runner::each_pair(inventory, true, |lab| {
            for host in [&lab.source, &lab.destination] {
                let spec = inventory
                    .hosts
                    .iter()
                    .find(|h| h.name == host.name)
                    .expect("a lab's hosts are its inventory's");
                surveys.push(match lab.connect(&host.uri) {
                    Ok(conn) => survey(conn, spec, true),
                    Err(e) => unreachable(spec, format!("{e:#}")),
                });
            }
            Ok(())
        })
    } else {
        for spec in &inventory.hosts {
            surveys.push(
                match libvirtd::connect_within(&spec.uri, libvirtd::CONNECT_TIMEOUT) {
                    Ok(conn) => survey(conn, spec, false),
                    Err(e) => unreachable(spec, format!("{e:#}")),
                },
            );
        }
        Ok(())
    };
    (surveys, asked)
}
