//! openvz: the study's OS-level container, here a container of Linux
//! namespaces migrated by CRIU (checkpoint/restore in userspace) between
//! the lab hosts. The guest is the same workload agent, as PID 1 of the
//! container; the host kernel is shared, so there is no accelerator.
//!
//! Strategies: `stop-and-copy` (dump to a page server on the destination,
//! restore there) and `postcopy` (restore at once, memory follows as lazy
//! pages), each over the migration link. `precopy` would be CRIU's iterative
//! pre-dumps, which need the kernel's soft-dirty page tracking that these
//! hosts lack; it is not offered. Postcopy is refused before the lab is
//! built where the host cannot serve lazy pages.

pub mod binary;
pub mod container;
mod phases;
mod post_copy;
pub mod remote;
pub mod stats;
mod stop_and_copy;
mod survey;

use super::{Backend, BackendInfo};
use crate::case::{Case, Hypervisor, Strategy};
use crate::lab::network::HOST_BRIDGE;
use crate::lab::Lab;
use crate::measure::Evacuation;
use crate::sampler::Source;
use anyhow::Result;
use binary::Criu;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The study's OpenVZ row: a container, checkpointed and restored by CRIU.
pub const OPENVZ: Hypervisor = Hypervisor::row("openvz");

/// CRIU: pre-copy by pre-dumps (where the kernel tracks dirty pages, which
/// a host without it refuses before the run), stop-and-copy and post-copy
/// by lazy pages; no downtime limit, no stream settings. A restore needs
/// the container's pids free, so not on the host it left. A real lab's
/// hosts run their own CRIU, driven over ssh; the runner needs none.
pub static BACKEND: super::Descriptor = super::Descriptor {
    rows: &[OPENVZ],
    capabilities: super::Capabilities {
        strategies: &[Strategy::Precopy, Strategy::StopAndCopy, Strategy::Postcopy],
        downtime_limit: &[],
        stream_settings: false,
        one_host: false,
    },
    new: |case, inventory| {
        if inventory.simulated {
            OpenVz::new(case).map(|c| Box::new(c) as Box<dyn Backend>)
        } else {
            Ok(Box::new(remote::hosts::OnRealHosts::new()))
        }
    },
    host_needs: super::HostNeeds {
        simulated: "containers migsuite moves with CRIU",
        over_ssh: Some("openvz runs CRIU on the host itself"),
        survey: |host, _row, _driver| survey::criu_on(host),
        bridge: None,
    },
    release: super::keeps_nothing,
    kept_for_other_pairs: super::keeps_nothing_for_others,
};

pub struct OpenVz {
    criu: Criu,
    info: BackendInfo,
    root: Option<PathBuf>,
    source: Option<container::Started>,
    /// Restored on the destination, `criu restore` its anchor (the
    /// container's parent there).
    destination: Option<container::Started>,
    /// The container's init on (source, destination), for the sampler.
    inits: Arc<Mutex<[Option<i32>; 2]>>,
}

impl OpenVz {
    pub fn new(_case: &Case) -> Result<OpenVz, String> {
        let criu = Criu::find()?;
        let info = BackendInfo {
            accel: "none (containers share the host kernel)".into(),
            hypervisor_version: format!("CRIU {} ({})", criu.version, criu.origin),
            toolstack_version: format!(
                "criu {} dump, page-server, lazy-pages and restore (no daemon)",
                criu.version
            ),
            storage: "container root on a directory both hosts see: not copied".into(),
        };
        Ok(OpenVz {
            criu,
            info,
            root: None,
            source: None,
            destination: None,
            inits: Arc::default(),
        })
    }

    /// The host pid of the container to evacuate.
    fn source_pid(&self) -> Result<i32, String> {
        self.source
            .as_ref()
            .map(|s| s.init.pid())
            .ok_or_else(|| "no container was provisioned".into())
    }

    /// Why this host cannot migrate with `strategy`; None if it can. (Which
    /// strategies the backend offers at all is checked when suites load.)
    fn refusal(&self, strategy: Strategy) -> Option<String> {
        match strategy {
            Strategy::Postcopy => post_copy::unavailable(&self.criu),
            Strategy::Precopy => Some(format!(
                "openvz pre-copy (CRIU's pre-dumps) runs on a real lab's hosts (`ssh` in its \
                 inventory); a simulated lab's container migrates by stop-and-copy or postcopy{}",
                match self.criu.feature("mem_dirty_track") {
                    Ok(()) => String::new(),
                    Err(why) => format!(" (and this kernel tracks no dirty pages: {why})"),
                }
            )),
            Strategy::StopAndCopy | Strategy::AutoConverge => None,
        }
    }
}

impl Backend for OpenVz {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn provision(&mut self, lab: &Lab, case: &Case, agent_args: &str) -> Result<()> {
        let root = container::prepare_root(lab)?;
        let ns = &lab.source.simulated()?.netns.name;
        let started = container::start(Some(ns), HOST_BRIDGE, &root, case.link.mtu, agent_args)?;
        self.inits.lock().unwrap()[0] = Some(started.init.pid());
        self.root = Some(root);
        self.source = Some(started);
        Ok(())
    }

    fn host_refusal(&self, case: &Case) -> Option<String> {
        self.refusal(case.migration.strategy)
    }

    fn check_guest(&self, hello: &BTreeMap<String, String>) -> Result<()> {
        container::check_hello(hello, &crate::sh::kernel_release())
    }

    fn evacuate(&mut self, lab: &Lab, case: &Case, progress: &dyn Fn(&str)) -> Evacuation {
        let result = match case.migration.strategy {
            Strategy::Postcopy => post_copy::evacuate(self, lab, case, progress),
            _ => stop_and_copy::evacuate(self, lab, case, progress),
        };
        result.unwrap_or_else(|reason| Evacuation::failed(reason, self.running_on_source()))
    }

    fn running_on_source(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|s| container::is_running(s.init.pid()))
    }

    /// The restored container, with `criu restore` as its anchor, is the
    /// next run's source.
    fn adopt_moved_guest(&mut self, _lab: &Lab) -> Result<()> {
        let restored = self
            .destination
            .take()
            .ok_or_else(|| anyhow::anyhow!("no container was restored on the destination"))?;
        *self.inits.lock().unwrap() = [Some(restored.init.pid()), None];
        self.source = Some(restored);
        Ok(())
    }

    /// Per host: the CRIU processes and the container's anchor in the host's
    /// namespace (not its idle libvirtd), and the container's processes,
    /// which live in a namespace of their own.
    fn sample_source(&self, lab: &Lab) -> Result<Source> {
        let in_namespaces = super::namespace_processes(lab)?;
        let inits = self.inits.clone();
        Ok(Source::Processes(Box::new(move || {
            let inits = *inits.lock().unwrap();
            let mut pids = in_namespaces();
            pids.toolstack = Default::default();
            for (i, init) in inits.iter().enumerate() {
                pids.guest[i].extend(init.map(container::tree).unwrap_or_default());
            }
            pids
        })))
    }
}

impl Drop for OpenVz {
    fn drop(&mut self) {
        for container in [self.source.take(), self.destination.take()]
            .into_iter()
            .flatten()
        {
            container.kill();
        }
    }
}
