//! `SpanLayer`: a `tracing_subscriber::Layer` that writes span definitions and every
//! enter and exit of a span into the thread's stream. A thread's allocations between
//! an enter and its exit belong to that span (the reader replays the enters and exits
//! in sequence order), so the allocator hot path does not change at all.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry().with(stackheap::SpanLayer::new());
//! tracing::subscriber::set_global_default(subscriber).unwrap();
//! ```
//!
//! It also turns TRACE events with target `stackheap::mark` into marks:
//! `tracing::trace!(target: "stackheap::mark", "warmup")` is `stackheap::mark("warmup")`.
//! Records are written only while a session is recording.

use std::fmt::Write as _;

use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::alloc::guard::Guard;
use crate::format::encode::{self, MAX_EVENT_RECORD, MAX_SPAN_DEF_RECORD};
use crate::format::varint::SliceWriter;
use crate::record::{session, slots};

/// Tags allocations with the current tracing span; see the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanLayer {
    _private: (),
}

impl SpanLayer {
    /// A new layer.
    pub fn new() -> Self {
        SpanLayer::default()
    }
}

fn write_def(id: u64, parent: u64, name: &str) {
    if !session::is_active() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let Some(slot) = slots::current() else { return };
    let mut scratch = [0u8; MAX_SPAN_DEF_RECORD];
    let mut w = SliceWriter::new(&mut scratch);
    encode::span_def(&mut w, id, parent, name.as_bytes());
    if slot.begin().is_some() {
        slot.write(w.as_slice());
        slot.end();
    }
}

fn write_edge(id: u64, enter: bool) {
    if !session::is_active() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let Some(slot) = slots::current() else { return };
    let Some(seq) = slot.begin() else { return };
    // SAFETY: this thread's slot; the guard keeps its allocator hooks out meanwhile.
    let owner = unsafe { slot.owner() };
    slot.record(MAX_EVENT_RECORD, |w| {
        owner.stream.span_edge(w, seq, id, enter)
    });
    slot.end();
}

/// Collects an event's message (or a `name` field) as the mark name, into a fixed
/// buffer (longer names are cut): the layer itself allocates nothing.
struct MarkName {
    buf: [u8; encode::MAX_MARK_NAME],
    len: usize,
}

impl std::fmt::Write for MarkName {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                break;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl tracing::field::Visit for MarkName {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" || field.name() == "name" {
            self.len = 0;
            let _ = self.write_str(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" || (field.name() == "name" && self.len == 0) {
            self.len = 0;
            let _ = write!(self, "{value:?}");
        }
    }
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent().map(|p| p.id().into_u64()))
            .unwrap_or(0);
        write_def(id.into_u64(), parent, attrs.metadata().name());
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        write_edge(id.into_u64(), true);
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        write_edge(id.into_u64(), false);
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        if m.target() != "stackheap::mark" || *m.level() != Level::TRACE {
            return;
        }
        if !session::is_active() {
            return;
        }
        let mut name = MarkName {
            buf: [0; encode::MAX_MARK_NAME],
            len: 0,
        };
        event.record(&mut name);
        // A cut may split a character: keep the valid prefix.
        let text = match std::str::from_utf8(&name.buf[..name.len]) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&name.buf[..e.valid_up_to()]).unwrap_or_default(),
        };
        crate::mark(text);
    }
}
