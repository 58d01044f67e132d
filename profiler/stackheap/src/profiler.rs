//! Starting profiling from code: [`Profiler::builder`] and the [`Profiler`] guard.

use std::path::{Path, PathBuf};

use crate::record::session::{self, SessionConfig};
use crate::stack::unwind::Unwinder;

/// Why profiling could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A session is already running.
    #[error("profiling is already running")]
    AlreadyRunning,
    /// No session is running.
    #[error("profiling is not running")]
    NotRunning,
    /// `StackHeap` is not the global allocator, so nothing would be seen.
    #[error("stackheap::StackHeap is not installed as #[global_allocator]")]
    NotInstalled,
    /// The trace file could not be created.
    #[error("cannot create trace {}: {source}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the trace failed.
    #[error("writing the trace failed: {0}")]
    Write(std::io::Error),
    /// Memory for the per-thread buffers could not be mapped.
    #[error("cannot map memory for the profiler's buffers")]
    Map,
}

/// Options for a profiling session. The same settings as the `STACKHEAP_*` variables
/// and the CLI flags.
#[derive(Debug, Clone)]
#[must_use]
pub struct ProfilerBuilder {
    trace_path: PathBuf,
    sample_rate: u64,
    unwinder: Option<Unwinder>,
    limit: u64,
    stack_hz: u32,
    live: bool,
}

impl Default for ProfilerBuilder {
    fn default() -> Self {
        ProfilerBuilder {
            trace_path: PathBuf::from("stackheap-%p.trace"),
            sample_rate: 1,
            unwinder: None,
            limit: 0,
            stack_hz: session::DEFAULT_STACK_HZ,
            live: false,
        }
    }
}

impl ProfilerBuilder {
    /// Where to write the trace (`%p` becomes the pid). The file must not exist.
    /// Default `stackheap-%p.trace`.
    pub fn trace_path(mut self, p: impl AsRef<Path>) -> Self {
        self.trace_path = p.as_ref().to_owned();
        self
    }

    /// Mean bytes between sampled allocations: 1 (the default) records every
    /// allocation with its stack, 0 keeps only the exact counters.
    pub fn sample_rate(mut self, bytes: u64) -> Self {
        self.sample_rate = bytes;
        self
    }

    /// Force an unwinder instead of picking frame pointers when they work.
    pub fn unwinder(mut self, u: Unwinder) -> Self {
        self.unwinder = Some(u);
        self
    }

    /// Heap limit in bytes (0, the default, = none): an allocation that would take the
    /// live heap over it gets null, as at a real out-of-memory, and the first failure
    /// writes an `Oom` record and flushes the trace (see [`crate::alloc::limit`]).
    pub fn limit(mut self, bytes: u64) -> Self {
        self.limit = bytes;
        self
    }

    /// Rate of the stack-depth sampler in Hz (default 250; 0 = off).
    pub fn stack_hz(mut self, hz: u32) -> Self {
        self.stack_hz = hz;
        self
    }

    /// Serve the live-attach socket while the session runs, for `stackheap attach PID`
    /// (default off; the same as `STACKHEAP_LIVE=1`; see [`crate::control`]).
    pub fn live(mut self, on: bool) -> Self {
        self.live = on;
        self
    }

    /// Start profiling. Fails if a session runs, the file cannot be created, or
    /// `StackHeap` is not the global allocator.
    pub fn start(self) -> Result<Profiler, Error> {
        let ProfilerBuilder {
            trace_path,
            sample_rate,
            unwinder,
            limit,
            stack_hz,
            live,
        } = self;
        let cfg = SessionConfig {
            trace_path: session::expand_path(&trace_path.to_string_lossy()),
            sample_rate,
            unwinder,
            limit,
            stack_hz,
            live,
        };
        // Everything allocated before the session must outlive it or be freed now: a
        // free of an older block during the session would lower the live counters.
        drop(trace_path);
        session::start(&cfg)?;
        if !crate::alloc::guard::probe_installed() {
            let _ = session::stop();
            let _ = std::fs::remove_file(&cfg.trace_path);
            return Err(Error::NotInstalled);
        }
        Ok(Profiler {
            path: cfg.trace_path,
            stopped: false,
        })
    }
}

/// A running session; dropping it stops profiling and flushes the trace.
#[derive(Debug)]
pub struct Profiler {
    path: PathBuf,
    stopped: bool,
}

impl Profiler {
    /// Options for a new session.
    pub fn builder() -> ProfilerBuilder {
        ProfilerBuilder::default()
    }

    /// The trace being written.
    pub fn trace_path(&self) -> &Path {
        &self.path
    }

    /// Stop now and report write errors (drop does the same, silently).
    pub fn stop(mut self) -> Result<PathBuf, Error> {
        self.stopped = true;
        session::stop()?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = session::stop();
        }
    }
}

/// Exact counters since profiling started (all zero when dormant).
pub fn counters() -> crate::format::Counters {
    crate::alloc::counters::snapshot()
}
