//! Beside the program: per-thread rings, the recorder thread that drains them into the
//! trace file, the module map, and session start/stop.

pub mod attach;
pub mod crash_flush;
pub mod modules;
pub mod recorder;
pub mod session;
pub mod slots;
