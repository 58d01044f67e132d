//! `stackheap attach PID`: talk to a running program's live-attach socket
//! (`stackheap run --live`, `STACKHEAP_LIVE=1`; protocol in docs/live-attach.md).
//! With `--snapshot DIR` it writes one live-heap flamegraph and exits; without it, it
//! shows the live terminal view ([`crate::attach_tui`]). Either way the program keeps
//! running: detaching only closes the connection.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::fd::AsRawFd;
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

/// The peer's pid and uid (`SO_PEERCRED`).
fn peer(s: &UnixStream) -> Option<(i32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some((cred.pid, cred.uid))
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
            match peer(&stream) {
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

/// Ask the program to flush its trace, read it up to the complete length, and write
/// the live heap now as `live.svg`, `live.folded` and `live.json` into `dir`.
pub fn snapshot(conn: &mut Conn, dir: &Path) -> Result<Snapshot> {
    let pid = conn.hello.pid;
    if conn.hello.sample_rate == 0 {
        bail!(
            "process {pid} records counters only (STACKHEAP_SAMPLE=0): its trace has no call stacks for a live-heap flamegraph"
        );
    }
    let reply = conn.request("snapshot")?;
    let s = &reply["snapshot"];
    let trace = PathBuf::from(s["trace"].as_str().unwrap_or_default());
    let complete = s["complete_bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("bad snapshot reply {reply}"))?;
    let a = stackheap_report::follow::analyze_prefix(&trace, complete, &AnalyzeOptions::default())
        .with_context(|| format!("reading the live trace {}", trace.display()))?;
    let live = select::live_at(&a, "end").map_err(|e| anyhow!("{e}"))?;
    let lines = select::folded(&a, &live);
    let title = format!(
        "Live heap of process {pid} at {}, by call stack",
        fmt_time(a.duration_ns)
    );
    let svg = stackheap_report::render::oom::flame_svg(&a, &lines, &title)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    let folded: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let top_sites: Vec<&stackheap_report::Site> = a.leaks().into_iter().take(10).collect();
    let top = top_sites.first().map(|s| {
        let name = stackheap_report::follow::site_label(&s.frames);
        let name = if name.is_empty() {
            format!("[stack {}]", s.stack)
        } else {
            name
        };
        (name, s.leaked_bytes)
    });
    let summary = json!({
        "pid": pid,
        "trace": trace,
        "complete_bytes": complete,
        "time_ns": a.duration_ns,
        "live_bytes": a.heap.leaked_bytes,
        "live_blocks": a.heap.leaked_blocks,
        "sampled": a.sampled(),
        "top": top_sites.iter().map(|s| json!({
            "bytes": s.leaked_bytes,
            "blocks": s.leaked_blocks,
            "frames": s.frames.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
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
        live_bytes: a.heap.leaked_bytes,
        live_blocks: a.heap.leaked_blocks,
        time_ns: a.duration_ns,
        top,
    })
}

/// A snapshot from the live view's follower, which has already read the trace as it
/// grew: it reads on to the length the program reports for the snapshot (no second pass
/// over the whole trace) and writes the same three files as [`snapshot`]. Events of the
/// program's last recorder round may still be held back by the reader's merge, so the
/// picture is of the moment one round (about 10 ms) before the request.
pub fn snapshot_followed(conn: &mut Conn, follow: &mut Follow, dir: &Path) -> Result<Snapshot> {
    let pid = conn.hello.pid;
    let reply = conn.request("snapshot")?;
    let s = &reply["snapshot"];
    let trace = PathBuf::from(s["trace"].as_str().unwrap_or_default());
    let complete = s["complete_bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("bad snapshot reply {reply}"))?;
    follow
        .poll(complete)
        .with_context(|| format!("reading the live trace {}", trace.display()))?;
    let lines = follow.folded_live();
    let title = format!(
        "Live heap of process {pid} at {}, by call stack",
        fmt_time(follow.time_ns())
    );
    let svg =
        stackheap_report::render::oom::flame_svg_lines(&lines, &title, "bytes", follow.sampled())?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create snapshot directory {}", dir.display()))?;
    let folded: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (live_bytes, live_blocks) = follow.live();
    let mut top_json = Vec::new();
    let mut top = None;
    for site in follow.top_live(10) {
        let frames = follow.frames(site.stack);
        if top.is_none() {
            top = Some((follow.site_name(site.stack), site.bytes));
        }
        top_json.push(json!({
            "bytes": site.bytes,
            "blocks": site.blocks,
            "frames": frames.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        }));
    }
    let summary = json!({
        "pid": pid,
        "trace": trace,
        "complete_bytes": complete,
        "time_ns": follow.time_ns(),
        "live_bytes": live_bytes,
        "live_blocks": live_blocks,
        "sampled": follow.sampled(),
        "top": top_json,
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
        live_bytes,
        live_blocks,
        time_ns: follow.time_ns(),
        top,
    })
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
