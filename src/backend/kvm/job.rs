//! A migration job's statistics as libvirt gives them: asked for while the
//! job runs (or once it completed, where libvirt keeps them), or sent with
//! the job-completed event.
//!
//! After a post-copy migration the destination keeps no statistics (libvirt
//! drops them: they would describe only the part before the switch) and
//! the source forgets the domain as the migration call returns; the
//! source's job-completed event, sent as the job ends, is the one place
//! that has them.

use crate::lab::identity::GuestIdentity;
use crate::lab::libvirtd::Connection;
use anyhow::Result;
use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::{mpsc, OnceLock};
use std::time::Duration;
use virt::domain::{Domain, JobStats};
use virt::sys;

/// Statistics from libvirt's parameter array, copied into Rust's memory
/// (strings too) before libvirt frees the array.
///
/// # Safety
/// `params` points to `nparams` typed parameters, or is null.
unsafe fn stats_from(kind: c_int, params: sys::virTypedParameterPtr, nparams: c_int) -> JobStats {
    let copy = if params.is_null() || nparams <= 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(params, nparams as usize).to_vec()
    };
    JobStats::from((kind, copy))
}

/// The domain's job statistics, None if libvirt has none. Not virt 0.5's
/// `Domain::job_stats`: it makes a Vec of libvirt's parameter array even
/// when that is null (no statistics), which aborts the process.
pub fn job_stats(dom: &Domain, flags: sys::virDomainGetJobStatsFlags) -> Option<JobStats> {
    let (mut kind, mut params, mut nparams) = (0, std::ptr::null_mut(), 0);
    if unsafe {
        sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut nparams, flags)
    } < 0
        || params.is_null()
    {
        return None;
    }
    let stats = unsafe { stats_from(kind, params, nparams) };
    unsafe { sys::virTypedParamsFree(params, nparams) };
    Some(stats)
}

/// Runs libvirt's event loop on a thread of its own, once per process.
/// Only connections opened after this deliver events (and keep alive).
pub fn serve_events() {
    static SERVING: OnceLock<bool> = OnceLock::new();
    SERVING.get_or_init(|| {
        if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
            return false;
        }
        std::thread::spawn(|| loop {
            if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                // A failing loop would spin; events then stop.
                return;
            }
        });
        true
    });
}

/// The statistics a domain's job-completed event brings, awaited on a
/// connection opened after `serve_events`.
pub struct CompletedJob<'c> {
    conn: &'c Connection,
    callback: c_int,
    received: mpsc::Receiver<JobStats>,
}

type Sender = mpsc::Sender<JobStats>;

unsafe extern "C" fn on_completed(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    params: sys::virTypedParameterPtr,
    nparams: c_int,
    opaque: *mut c_void,
) {
    let sent = &*(opaque as *const Sender);
    let _ = sent.send(stats_from(
        sys::VIR_DOMAIN_JOB_COMPLETED as c_int,
        params,
        nparams,
    ));
}

unsafe extern "C" fn free_sender(opaque: *mut c_void) {
    drop(Box::from_raw(opaque as *mut Sender));
}

impl<'c> CompletedJob<'c> {
    /// Listens for the job-completed event of the guest on the host
    /// behind `conn`.
    pub fn listen(conn: &'c Connection, guest: &GuestIdentity) -> Result<CompletedJob<'c>> {
        let dom = super::find(conn, guest)?;
        let (sent, received) = mpsc::channel();
        let opaque = Box::into_raw(Box::new(sent)) as *mut c_void;
        // SAFETY: libvirt calls the callback with the job-completed
        // event's arguments (its generic type is how the C API takes
        // every callback) and frees `opaque` with `free_sender`, once.
        let callback = unsafe {
            let cb: sys::virConnectDomainEventJobCompletedCallback = Some(on_completed);
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                dom.as_ptr(),
                sys::VIR_DOMAIN_EVENT_ID_JOB_COMPLETED as c_int,
                std::mem::transmute::<
                    sys::virConnectDomainEventJobCompletedCallback,
                    sys::virConnectDomainEventGenericCallback,
                >(cb),
                opaque,
                Some(free_sender),
            )
        };
        if callback < 0 {
            drop(unsafe { Box::from_raw(opaque as *mut Sender) });
            anyhow::bail!(
                "libvirt refused to send the job-completed event: {}",
                virt::error::Error::last_error().message()
            );
        }
        Ok(CompletedJob {
            conn,
            callback,
            received,
        })
    }

    /// The completed job's statistics, if the event comes within `wait`.
    pub fn stats(&self, wait: Duration) -> Option<JobStats> {
        self.received.recv_timeout(wait).ok()
    }
}

impl Drop for CompletedJob<'_> {
    fn drop(&mut self) {
        unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.callback) };
    }
}
