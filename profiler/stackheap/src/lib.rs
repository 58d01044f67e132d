//! stackheap: a stack-and-heap usage profiler, the part that runs inside the profiled
//! process.
//!
//! Install it as the global allocator; it stays dormant (one relaxed atomic load per
//! allocation) until profiling starts from the environment (`STACKHEAP_TRACE`, set by
//! `stackheap run`) or from code with [`Profiler::builder`]:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();
//!
//! fn main() -> Result<(), stackheap::Error> {
//!     let _profiler = stackheap::Profiler::builder().trace_path("app.trace").start()?;
//!     let v: Vec<u64> = (0..1000).collect();
//!     drop(v);
//!     Ok(()) // dropping the profiler stops and flushes the trace
//! }
//! ```
//!
//! Environment (read at the first allocation): `STACKHEAP_TRACE=path` (`%p` = pid)
//! starts profiling; `STACKHEAP_SAMPLE=bytes` (default 1 = every allocation, 0 =
//! counters only, e.g. `512KiB` = Poisson sampling with that mean); `STACKHEAP_UNWIND=
//! fp|backtrace` forces an unwinder; `STACKHEAP_LIMIT=256MiB` sets a heap limit
//! (simulated out-of-memory, see [`alloc::limit`]); `STACKHEAP_LIVE=1` serves the
//! live-attach socket for `stackheap attach PID` (see [`control`]).
//!
//! [`mark`] writes a named point in time that the reports can select
//! (`stackheap diff TRACE --from warmup --to end`).
//!
//! Module map, by where the code runs: [`alloc`] and [`stack`] run inside every
//! allocation (the hot path); [`record`] is the recorder thread beside the program;
//! [`mod@format`] is the trace contract shared with the readers.

pub mod alloc;
pub mod control;
pub mod format;
mod mark;
mod profiler;
pub mod record;
#[cfg(feature = "tracing")]
mod span;
pub mod stack;
pub mod testing;

pub use alloc::StackHeap;
pub use mark::mark;
pub use profiler::{counters, Error, Profiler, ProfilerBuilder};
#[cfg(feature = "tracing")]
pub use span::SpanLayer;
pub use stack::unwind::Unwinder;
