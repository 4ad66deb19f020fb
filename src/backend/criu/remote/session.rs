//! The runner's side of a CRIU session on a real host: `migsuite criu-host`
//! run over ssh, asked by request id, several requests at once. The
//! session lives as long as this value: dropping it closes the session's
//! input, and the host removes what it made. So does the runner's death,
//! by any signal: ssh's input closes with it.

use super::{Answer, Ask, Reply, Request};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long the host may take to answer a request that does not wait on
/// CRIU (its own timeouts are given with the request), over ssh.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// After its input closed, how long the session may take to clean up.
const END_TIMEOUT: Duration = Duration::from_secs(20);

type Waiting = Arc<Mutex<Option<HashMap<u64, mpsc::Sender<Result<Reply, String>>>>>>;

pub struct HostSession {
    /// The host's name in the inventory, for messages.
    host: String,
    input: Mutex<Option<ChildStdin>>,
    ssh: Mutex<Child>,
    /// Requests waiting for their answer; None once the session ended.
    waiting: Waiting,
    /// What ssh and the session said on their error output, last lines.
    said: Arc<Mutex<Vec<String>>>,
    next: AtomicU64,
}

impl HostSession {
    /// Starts session `session` on `host`, reached as `ssh` (`root@address`).
    pub fn open(host: &str, ssh: &str, session: &str) -> Result<HostSession> {
        let mut child = crate::sh::ssh(ssh)
            .args(["migsuite", "criu-host", "--session", session])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("host {host}: starting ssh {ssh}"))?;
        let waiting: Waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let said = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (w, s) = (waiting.clone(), said.clone());
        let host_name = host.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(answer) = serde_json::from_str::<Answer>(&line) else {
                    push(&s, format!("(not an answer) {line}"));
                    continue;
                };
                let sender = w
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|m| m.remove(&answer.id));
                if let Some(sender) = sender {
                    let _ = sender.send(answer.result);
                }
            }
            // The session ended: whoever still waits hears why.
            let left = w.lock().unwrap().take().unwrap_or_default();
            let why = ended(&host_name, &s);
            for (_, sender) in left {
                let _ = sender.send(Err(why.clone()));
            }
        });
        let s = said.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                push(&s, line);
            }
        });
        Ok(HostSession {
            host: host.to_string(),
            input: Mutex::new(child.stdin.take()),
            ssh: Mutex::new(child),
            waiting,
            said,
            next: AtomicU64::new(1),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Asks `ask` and waits up to `timeout` for the answer.
    pub fn ask(&self, ask: Ask, timeout: Duration) -> Result<Reply, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let what = format!("{ask:?}");
        let what = what
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_string();
        let (tx, rx) = mpsc::channel();
        match self.waiting.lock().unwrap().as_mut() {
            Some(m) => m.insert(id, tx),
            None => return Err(ended(&self.host, &self.said)),
        };
        let line = serde_json::to_string(&Request { id, ask }).map_err(|e| e.to_string())?;
        let sent = match self.input.lock().unwrap().as_mut() {
            Some(input) => writeln!(input, "{line}").and_then(|_| input.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(e) = sent {
            return Err(format!(
                "host {}: cannot send {what} to its session ({e}): {}",
                self.host,
                ended(&self.host, &self.said)
            ));
        }
        match rx.recv_timeout(timeout) {
            Ok(result) => result.map_err(|e| format!("host {}: {what}: {e}", self.host)),
            Err(_) => {
                if let Some(m) = self.waiting.lock().unwrap().as_mut() {
                    m.remove(&id);
                }
                Err(format!(
                    "host {}: {what} had no answer within {timeout:?}",
                    self.host
                ))
            }
        }
    }
}

fn push(said: &Mutex<Vec<String>>, line: String) {
    let mut said = said.lock().unwrap();
    said.push(line);
    let excess = said.len().saturating_sub(5);
    said.drain(..excess);
}

fn ended(host: &str, said: &Mutex<Vec<String>>) -> String {
    let said = said.lock().unwrap();
    format!(
        "the criu-host session on host {host} ended{}",
        if said.is_empty() {
            String::new()
        } else {
            format!(": {}", said.join("; "))
        }
    )
}

impl Drop for HostSession {
    /// The session's input closes: the host removes what it made, then
    /// the session and ssh end.
    fn drop(&mut self) {
        self.input.lock().unwrap().take();
        let mut ssh = self.ssh.lock().unwrap();
        if !crate::sh::wait_exit(&mut ssh, END_TIMEOUT) {
            eprintln!(
                "host {}: its criu-host session did not end within {END_TIMEOUT:?} after its \
                 input closed; ssh killed (the host removes the session's leftovers at its next \
                 session)",
                self.host
            );
            let _ = ssh.kill();
            let _ = ssh.wait();
        }
    }
}
