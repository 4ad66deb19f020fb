//! The line protocol of a dom0 command server, whatever carries it (a
//! nested host's virtio-serial port, an ssh session to a real dom0): the
//! runner writes `<id> <timeout s> <command>`; dom0 runs the command with
//! bash under `timeout` and answers with its output and
//! `@@END <id> <exit status>`. One command at a time.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What dom0 says once it serves.
pub const READY: &str = "@@READY";
/// How much longer than a command's own timeout its answer may take.
const ANSWER_GRACE: Duration = Duration::from_secs(15);

/// What a command answered.
#[derive(Debug)]
pub struct Answer {
    pub status: i32,
    pub output: String,
}

pub struct Channel {
    /// dom0's lines, read by a thread of their own (so waiting for one has
    /// a timeout whatever the reader is); None once the reader ended.
    lines: mpsc::Receiver<String>,
    /// None once closed.
    writer: Option<Box<dyn Write + Send>>,
    next_id: u32,
}

/// What waiting for a line gave.
pub enum Line {
    Text(String),
    TimedOut,
    Closed,
}

impl Channel {
    pub fn new(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Channel {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Channel {
            lines,
            writer: Some(Box::new(writer)),
            next_id: 1,
        }
    }

    /// Ends dom0's input: the server ends, as it does when the runner dies.
    pub fn close(&mut self) {
        self.writer = None;
    }

    /// The next line dom0 wrote, waiting at most `timeout`.
    pub fn line(&self, timeout: Duration) -> Line {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Line::Text(l),
            Err(RecvTimeoutError::Timeout) => Line::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Line::Closed,
        }
    }

    /// Runs `command` (one line, bash) in dom0, with `timeout`; `closed`
    /// says what an ended channel means, for the error.
    pub fn sh(
        &mut self,
        command: &str,
        timeout: Duration,
        closed: &dyn Fn() -> String,
    ) -> Result<Answer> {
        anyhow::ensure!(!command.contains('\n'), "dom0 commands are one line");
        let id = self.next_id;
        self.next_id += 1;
        let secs = timeout.as_secs().max(1);
        let writer = self
            .writer
            .as_mut()
            .context("the channel to dom0 is closed")?;
        writeln!(writer, "{id} {secs} {command}")?;
        writer.flush()?;
        // dom0's `timeout` ends the command; the channel gets some more.
        let deadline = Instant::now() + timeout + ANSWER_GRACE;
        let end = format!("@@END {id} ");
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "dom0 did not answer `{command}` within {} s",
                (timeout + ANSWER_GRACE).as_secs()
            );
            match self.line(left) {
                Line::Text(line) => {
                    if let Some(rest) = line.trim_end().strip_prefix(&end) {
                        let status = rest.trim().parse().unwrap_or(-1);
                        let output = output.strip_suffix('\n').unwrap_or(&output).to_string();
                        return Ok(Answer { status, output });
                    }
                    output.push_str(&line);
                    output.push('\n');
                }
                Line::TimedOut => {}
                Line::Closed => bail!("{}", closed()),
            }
        }
    }
}
