//! `stackheap attach PID`: talk to a running program's live-attach socket
//! (`stackheap run --live`, `STACKHEAP_LIVE=1`; protocol in docs/live-attach.md).
//! With `--snapshot DIR` it writes one live-heap flamegraph and exits; without it, it
//! shows the live terminal view ([`crate::attach_tui`]). Either way the program keeps
//! running: detaching only closes the connection.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use stackheap_report::follow::Follow;
use stackheap_report::render::{fmt_bytes, fmt_time, write_atomic};
use stackheap_report::{select, AnalyzeOptions};

/// Options of `stackheap attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Process id of a program that serves the live-attach socket.
    pub pid: u32,
    /// Take one snapshot into this directory (live.svg, live.folded, live.json), print
    /// where, and exit; no terminal needed.
    #[arg(long, value_name = "DIR")]
    pub snapshot: Option<PathBuf>,
    /// Directory for the snapshots taken with `s` in the live view
    /// [default: stackheap-out/attach-PID].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Refresh period of the live view, milliseconds.
    #[arg(long, default_value = "500")]
    pub interval: u64,
}

/// What the server says when a client connects.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The program's pid.
    pub pid: u32,
    /// Its trace file.
    pub trace: PathBuf,
    /// 0 = counters only, 1 = every allocation, N = sampled.
    pub sample_rate: u64,
}

/// A connection to one program's socket.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The greeting.
    pub hello: Hello,
}

fn no_socket(pid: u32) -> anyhow::Error {
    anyhow!(
        "process {pid} does not serve a stackheap socket; start it with stackheap run --live or STACKHEAP_LIVE=1"
    )
}

/// Where the socket of `pid` may be: our runtime dir, the program's (from its
/// environment, readable for our own processes), the temp dir.
fn candidates(pid: u32) -> Vec<PathBuf> {
    let mut dirs = vec![stackheap::control::socket_dir()];
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
        for kv in env.split(|&b| b == 0) {
            if let Some(v) = kv.strip_prefix(b"XDG_RUNTIME_DIR=") {
                let d = PathBuf::from(String::from_utf8_lossy(v).into_owned());
                if d.is_absolute() {
                    dirs.push(d);
                }
            }
        }
    }
    dirs.push(std::env::temp_dir());
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = stackheap::control::socket_path_in(&d, pid);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

impl Conn {
    /// Connect to the socket of `pid`; one clear error if it serves none.
    pub fn connect(pid: u32) -> Result<Conn> {
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(no_socket(pid));
        }
        let mut last_err = None;
        for path in candidates(pid) {
            if !path.exists() {
                continue;
            }
            let stream = match UnixStream::connect(&path) {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some((path, e));
                    continue;
                }
            };
            // A socket of that name in a shared directory could be anyone's: talk only
            // to the process we were asked about.
            match stackheap::control::peer_credentials(&stream) {
                Some((p, _)) if p as u32 == pid => {}
                Some((p, _)) => bail!(
                    "{} is served by process {p}, not {pid}; not attaching",
                    path.display()
                ),
                None => bail!("cannot check who serves {}", path.display()),
            }
            return Conn::greet(stream, pid);
        }
        match last_err {
            Some((path, e)) if e.kind() != std::io::ErrorKind::ConnectionRefused => Err(anyhow!(
                "cannot connect to {} of process {pid}: {e}",
                path.display()
            )),
            // A socket nobody listens on is left by a process that died.
            _ => Err(no_socket(pid)),
        }
    }

    fn greet(stream: UnixStream, pid: u32) -> Result<Conn> {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .context("socket timeout")?;
        let writer = stream.try_clone().context("socket")?;
        let mut conn = Conn {
            reader: BufReader::new(stream),
            writer,
            hello: Hello {
                pid,
                trace: PathBuf::new(),
                sample_rate: 1,
            },
        };
        let v = conn
            .read_reply()
            .with_context(|| format!("process {pid} did not greet"))?;
        conn.hello = Hello {
            pid,
            trace: PathBuf::from(v["trace"].as_str().unwrap_or_default()),
            sample_rate: v["sample_rate"].as_u64().unwrap_or(1),
        };
        if v["stackheap"].as_u64() != Some(stackheap::control::PROTOCOL as u64) {
            bail!(
                "process {pid} speaks another live-attach protocol ({})",
                v["stackheap"]
            );
        }
        Ok(conn)
    }

    fn read_reply(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from the socket")?;
        if n == 0 {
            bail!("the process closed the connection (it stopped profiling or exited)");
        }
        let v: Value = serde_json::from_str(line.trim_end())
            .with_context(|| format!("bad reply {:?}", line.trim_end()))?;
        if let Some(e) = v["error"].as_str() {
            bail!("process {}: {e}", self.hello.pid);
        }
        Ok(v)
    }

    /// Send one request line and return its reply.
    pub fn request(&mut self, line: &str) -> Result<Value> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .context("writing to the socket (the process may have exited)")?;
        self.read_reply()
    }

    /// The counters, RSS and threads now.
    pub fn stats(&mut self) -> Result<Value> {
        Ok(self.request("stats")?["stats"].take())
    }

    /// Write a mark named `name` into the program's trace.
    pub fn mark(&mut self, name: &str) -> Result<()> {
        self.request(&format!("mark {name}")).map(|_| ())
    }
}

/// What one snapshot wrote.
pub struct Snapshot {
    /// The files, in order: live.svg, live.folded, live.json.
    pub files: Vec<PathBuf>,
    /// Live heap bytes and blocks in the trace at the snapshot.
    pub live_bytes: u64,
    /// Live blocks.
    pub live_blocks: u64,
    /// When (ns since the program's start).
    pub time_ns: u64,
    /// The biggest live site's innermost frame, with its bytes.
    pub top: Option<(String, u64)>,
}

impl Snapshot {
    /// One line for the terminal.
    pub fn line(&self, pid: u32) -> String {
        let top = self
            .top
            .as_ref()
            .map(|(n, b)| format!("; biggest site {n} ({})", fmt_bytes(*b)))
            .unwrap_or_default();
        format!(
            "snapshot of process {pid} at {}: live heap {} in {} blocks{top}",
            fmt_time(self.time_ns),
            fmt_bytes(self.live_bytes),
            self.live_blocks
        )
    }
}

/// The live heap at one moment, as both kinds of snapshot draw it.
struct Picture {
    trace: PathBuf,
    complete: u64,
    time_ns: u64,
    live_bytes: u64,
    live_blocks: u64,
    sampled: bool,
    /// Folded lines of the live heap (bytes).
    lines: Vec<String>,
    /// The largest live sites: short name, bytes, blocks, frames.
    top: Vec<(String, u64, u64, Vec<String>)>,
}

/// Ask the program for a snapshot: the trace and how many of its bytes are complete.
fn request_snapshot(conn: &mut Conn) -> Result<(PathBuf, u64)> {
    let reply = conn.request("snapshot")?;
    let s = &reply["snapshot"];
    let trace = PathBuf::from(s["trace"].as_str().unwrap_or_default());
    let complete = s["complete_bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("bad snapshot reply {reply}"))?;
    Ok((trace, complete))
}

/// Write `live.svg`, `live.folded` and `live.json` of `p` into `dir`.
fn write_picture(pid: u32, p: Picture, dir: &Path) -> Result<Snapshot> {
    let title = format!(
        "Live heap of process {pid} at {}, by call stack",
        fmt_time(p.time_ns)
    );
    let svg = stackheap_report::render::oom::flame_svg_lines(&p.lines, &title, "bytes", p.sampled)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    let folded: String = p.lines.iter().map(|l| format!("{l}\n")).collect();
    let summary = json!({
        "pid": pid,
        "trace": p.trace,
        "complete_bytes": p.complete,
        "time_ns": p.time_ns,
        "live_bytes": p.live_bytes,
        "live_blocks": p.live_blocks,
        "sampled": p.sampled,
        "top": p.top.iter().map(|(_, bytes, blocks, frames)| json!({
            "bytes": bytes,
            "blocks": blocks,
            "frames": frames,
        })).collect::<Vec<_>>(),
    });
    let mut json_text = serde_json::to_string_pretty(&summary)?;
    json_text.push('\n');
    let files = vec![
        write_atomic(dir, "live.svg", &svg)?,
        write_atomic(dir, "live.folded", folded.as_bytes())?,
        write_atomic(dir, "live.json", json_text.as_bytes())?,
    ];
    Ok(Snapshot {
        files,
        live_bytes: p.live_bytes,
        live_blocks: p.live_blocks,
        time_ns: p.time_ns,
        top: p
            .top
            .first()
            .map(|(name, bytes, _, _)| (name.clone(), *bytes)),
    })
}

/// Ask the program to flush its trace, read it up to the complete length, and write
/// the live heap now as `live.svg`, `live.folded` and `live.json` into `dir`.
pub fn snapshot(conn: &mut Conn, dir: &Path) -> Result<Snapshot> {
    let pid = conn.hello.pid;
    if conn.hello.sample_rate == 0 {
        bail!(
            "process {pid} records counters only (STACKHEAP_SAMPLE=0): its trace has no call stacks for a live-heap flamegraph"
        );
    }
    let (trace, complete) = request_snapshot(conn)?;
    let a = stackheap_report::follow::analyze_prefix(&trace, complete, &AnalyzeOptions::default())
        .with_context(|| format!("reading the live trace {}", trace.display()))?;
    let live = select::live_at(&a, "end").map_err(|e| anyhow!("{e}"))?;
    let top = a
        .leaks()
        .into_iter()
        .take(10)
        .map(|s| {
            let name = stackheap_report::follow::site_label(&s.frames);
            let name = if name.is_empty() {
                format!("[stack {}]", s.stack)
            } else {
                name
            };
            let frames = s.frames.iter().map(|f| f.name.clone()).collect();
            (name, s.leaked_bytes, s.leaked_blocks, frames)
        })
        .collect();
    let picture = Picture {
        lines: select::folded(&a, &live),
        trace,
        complete,
        time_ns: a.duration_ns,
        live_bytes: a.heap.leaked_bytes,
        live_blocks: a.heap.leaked_blocks,
        sampled: a.sampled(),
        top,
    };
    write_picture(pid, picture, dir)
}

/// A snapshot from the live view's follower, which has already read the trace as it
/// grew: it reads on to the length the program reports for the snapshot (no second pass
/// over the whole trace) and writes the same three files as [`snapshot`]. Events of the
/// program's last recorder round may still be held back by the reader's merge, so the
/// picture is of the moment one round (about 10 ms) before the request.
pub fn snapshot_followed(conn: &mut Conn, follow: &mut Follow, dir: &Path) -> Result<Snapshot> {
    let (trace, complete) = request_snapshot(conn)?;
    follow
        .poll(complete)
        .with_context(|| format!("reading the live trace {}", trace.display()))?;
    let (live_bytes, live_blocks) = follow.live();
    let top = follow
        .top_live(10)
        .into_iter()
        .map(|site| {
            let frames = follow.frames(site.stack);
            let frames = frames.iter().map(|f| f.name.clone()).collect();
            (
                follow.site_name(site.stack),
                site.bytes,
                site.blocks,
                frames,
            )
        })
        .collect();
    let picture = Picture {
        lines: follow.folded_live(),
        trace,
        complete,
        time_ns: follow.time_ns(),
        live_bytes,
        live_blocks,
        sampled: follow.sampled(),
        top,
    };
    write_picture(conn.hello.pid, picture, dir)
}

/// `stackheap attach`.
pub fn attach(args: AttachArgs) -> Result<ExitCode> {
    let mut conn = Conn::connect(args.pid)?;
    if let Some(dir) = &args.snapshot {
        let snap = snapshot(&mut conn, dir)?;
        println!("{}", snap.line(args.pid));
        crate::print_files(&snap.files);
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "the live view of process {} needs a terminal; use --snapshot DIR for one snapshot without one",
            args.pid
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("stackheap-out/attach-{}", args.pid)));
    crate::attach_tui::run(conn, &out, Duration::from_millis(args.interval.max(100)))
}
