//! What CRIU does on the host for a session: the container started, the
//! page server, dumps (pre-dumps, the last one, a lazy one serving pages),
//! restores (whole, or pulling pages lazily), each bounded in time.

use super::{
    record, wait_until, Session, GUEST_RECORD, LAZY_DUMP_RECORD, LAZY_PAGES_RECORD,
    PAGE_SERVER_RECORD,
};
use crate::backend::criu::binary;
use crate::backend::criu::container;
use crate::backend::criu::phases::{self, Restoring};
use crate::backend::criu::post_copy;
use crate::backend::criu::remote::{Reply, ROOT};
use crate::backend::criu::stats::Stats;
use crate::pidfd::ProcessHandle;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Session {
    pub(super) fn start(&self, bridge: &str, mtu: u32, agent_args: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if state.guest.is_some() {
            return Err("a container already runs in this session".into());
        }
        let started = container::start(None, bridge, &self.dir.join(ROOT), mtu, agent_args)
            .map_err(|e| format!("starting the container: {e:#}"))?;
        record(&self.dir.join(GUEST_RECORD), &started.init);
        state.guest = Some(started);
        Ok(())
    }

    pub(super) fn page_server(
        &self,
        images: &str,
        prev: Option<&str>,
        address: std::net::IpAddr,
        port: u16,
    ) -> Result<(), String> {
        let (dir, parent_arg) = self.images_after(images, prev)?;
        let pidfile = dir.join("page-server.pid");
        let (dir_arg, address, port, pidfile_arg) = (
            dir.display().to_string(),
            address.to_string(),
            port.to_string(),
            pidfile.display().to_string(),
        );
        let mut args = vec![
            "page-server",
            "--daemon",
            "--images-dir",
            &dir_arg,
            "--address",
            &address,
            "--port",
            &port,
            "--pidfile",
            &pidfile_arg,
            "--log-file",
            "page-server.log",
        ];
        if let Some(p) = &parent_arg {
            args.extend(["--prev-images-dir", p]);
        }
        // The page server daemonizes once it listens.
        self.criu()?
            .run(None, &args)
            .map_err(|e| format!("starting the page server: {e:#}"))?;
        let server = phases::read_pid(&pidfile)?;
        record(&self.dir.join(PAGE_SERVER_RECORD), &server);
        if let Some(old) = self.state.lock().unwrap().page_server.replace(server) {
            old.kill();
        }
        Ok(())
    }

    pub(super) fn dump(
        &self,
        images: &str,
        prev: Option<&str>,
        (address, port): (std::net::IpAddr, u16),
        last: bool,
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        let pid = self.guest_pid()?;
        let (dir, parent_arg) = self.images_after(images, prev)?;
        let (pid, dir_arg, address, port) = (
            pid.to_string(),
            dir.display().to_string(),
            address.to_string(),
            port.to_string(),
        );
        let mut args = vec![
            if last { "dump" } else { "pre-dump" },
            "--tree",
            &pid,
            "--images-dir",
            &dir_arg,
            "--track-mem",
            "--page-server",
            "--address",
            &address,
            "--port",
            &port,
            "--display-stats",
            "--log-file",
            "dump.log",
        ];
        if let Some(p) = &parent_arg {
            args.extend(["--prev-images-dir", p]);
        }
        if last {
            // Stopped, not killed: resumed if the restore fails.
            args.push("--leave-stopped");
        }
        args.extend(network_lock(&criu.version));
        let mut dump = criu
            .command(None, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting criu: {e}"))?;
        let mut stdout = dump.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let what = args[0];
        let Some(status) = wait_until(&mut dump, started + Duration::from_millis(timeout_ms))?
        else {
            return Err(format!(
                "criu {what} did not end within {timeout_ms} ms and was killed"
            ));
        };
        let stats = Stats::parse(&reader.join().unwrap_or_default());
        if !status.success() {
            return Err(format!(
                "criu {what} failed ({status}): {}",
                phases::errors(&dir.join("dump.log"))
            ));
        }
        Ok(Reply::Criu {
            ms: phases::ms(started.elapsed()),
            stats,
        })
    }

    pub(super) fn restore(
        &self,
        images: &str,
        bridge: &str,
        lazy: bool,
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        if self.state.lock().unwrap().guest.is_some() {
            return Err("a container already runs in this session".into());
        }
        let dir = self.images(images)?;
        let deadline = started + Duration::from_millis(timeout_ms);
        let mut extra = network_lock(&criu.version);
        if lazy {
            extra.push("--lazy-pages");
        }
        let (restored, stats) = phases::restore_container(
            criu,
            None,
            &Restoring {
                images: &dir,
                root: &self.dir.join(ROOT),
                bridge,
                extra: &extra,
            },
            |_| {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "criu restore did not end within {timeout_ms} ms and was killed"
                    ));
                }
                Ok(())
            },
        )?;
        record(&self.dir.join(GUEST_RECORD), &restored.init);
        self.state.lock().unwrap().guest = Some(restored);
        Ok(Reply::Criu {
            ms: phases::ms(started.elapsed()),
            stats,
        })
    }

    /// The container's init here.
    pub(super) fn guest_pid(&self) -> Result<i32, String> {
        let state = self.state.lock().unwrap();
        Ok(state.guest.as_ref().ok_or("no container here")?.init.pid())
    }

    pub(super) fn serve_lazily(
        &self,
        images: &str,
        (address, port): (std::net::IpAddr, u16),
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let started = Instant::now();
        let criu = self.criu()?;
        let pid = self.guest_pid()?;
        let (dir, _) = self.images_after(images, None)?;
        let (mut dump, ready) = post_copy::spawn_lazy_dump(
            criu,
            None,
            pid,
            &dir,
            (&address.to_string(), &port.to_string()),
            &network_lock(&criu.version),
        )?;
        if let Ok(p) = ProcessHandle::open(dump.id() as i32) {
            record(&self.dir.join(LAZY_DUMP_RECORD), &p);
        }
        let deadline = started + Duration::from_millis(timeout_ms);
        let log = dir.join("dump.log");
        if let Err(why) =
            post_copy::wait_ready(ready, &mut dump, &|| Instant::now() >= deadline, timeout_ms)
        {
            let _ = dump.kill();
            let _ = dump.wait();
            return Err(format!("{why}: {}", phases::errors(&log)));
        }
        let frozen_ms = post_copy::log_offset(
            &std::fs::read_to_string(&log).unwrap_or_default(),
            "Seized task",
        )
        .map(phases::ms);
        self.state.lock().unwrap().lazy_dump = Some((dump, dir));
        Ok(Reply::Serving {
            ms: phases::ms(started.elapsed()),
            frozen_ms,
        })
    }

    pub(super) fn pull_lazily(
        &self,
        images: &str,
        (address, port): (std::net::IpAddr, u16),
    ) -> Result<(), String> {
        let dir = self.images(images)?;
        let daemon = post_copy::start_lazy_pages(
            self.criu()?,
            None,
            &dir,
            (&address.to_string(), &port.to_string()),
        )?;
        record(&self.dir.join(LAZY_PAGES_RECORD), &daemon);
        if let Some((old, _)) = self.state.lock().unwrap().lazy_pages.replace((daemon, dir)) {
            old.kill();
        }
        Ok(())
    }

    /// Waits for the serving dump to end (the state's lock is not held
    /// meanwhile: samples go on); kills it at the deadline.
    pub(super) fn served(&self, timeout_ms: u64) -> Result<(), String> {
        let (mut dump, dir) = self
            .state
            .lock()
            .unwrap()
            .lazy_dump
            .take()
            .ok_or("no dump serves pages here")?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let Some(status) = wait_until(&mut dump, deadline)? else {
            return Err(format!(
                "the destination had not pulled every page within {timeout_ms} ms; criu dump \
                 killed"
            ));
        };
        let _ = std::fs::remove_file(self.dir.join(LAZY_DUMP_RECORD));
        if !status.success() {
            return Err(format!(
                "criu dump failed while serving lazy pages ({status}): {}",
                phases::errors(&dir.join("dump.log"))
            ));
        }
        Ok(())
    }

    pub(super) fn pulled(&self) -> Result<Reply, String> {
        let (daemon, dir) = self
            .state
            .lock()
            .unwrap()
            .lazy_pages
            .take()
            .ok_or("no lazy-pages daemon here")?;
        daemon.kill();
        let _ = std::fs::remove_file(self.dir.join(LAZY_PAGES_RECORD));
        let log = std::fs::read_to_string(dir.join("lazy-pages.log")).unwrap_or_default();
        Ok(Reply::Pulled {
            pages: post_copy::pages_read(&log),
            image_bytes: post_copy::image_bytes(&dir, "pages-"),
        })
    }
}

/// CRIU's network lock: none from 3.19 on (the container's network is its
/// own veth, which nothing else uses); before, only iptables' (the default).
fn network_lock(version: &str) -> Vec<&'static str> {
    if binary::major_minor(version) >= (3, 19) {
        vec!["--network-lock", "skip"]
    } else {
        Vec::new()
    }
}
