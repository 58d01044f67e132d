//! `growth`: a service loop whose heap keeps growing — the slow leak of long-running programs.
//!
//! Each tick the "service" does three things with the heap:
//!
//! * **Steady churn (flat)**: it handles a batch of requests; each allocates a request body
//!   and a response, and frees both before the next tick. Lots of traffic, no growth.
//! * **A bounded buffer (flat)**: it keeps the last `--recent` responses in a `VecDeque`; the
//!   oldest is dropped when a new one comes in, so the buffer stays the same size.
//! * **An unbounded cache (the bug)**: [`Service::remember_response`] stores one response per
//!   tick in a `HashMap` and nothing ever evicts it. Live heap grows by `--entry-size` bytes
//!   per tick, forever.
//!
//! Nothing here is a leak in the strict sense — all of it is freed when the service is dropped
//! at the end — which is exactly why a leak checker at exit does not find it. A growth
//! timeline does: the live bytes attributed to `remember_response` rise steadily while
//! everything else stays flat. Try `stackheap run -- target/release/growth`, then look at the
//! timeline and growth report.
//!
//! Spans: each request is handled inside a `request` tracing span, so `flame-spans.svg`
//! charges the request churn to it.
//!
//! Marks: `warmup` after the first tenth of the ticks and `end` when the loop stops (before
//! the service is dropped), so `stackheap diff TRACE --from warmup --to end` shows the cache
//! on top. `cache_rate_bytes_per_s` in the expected line is the cache's growth by the
//! demo's own clock (cache bytes / serving time), to compare with the growth report.
//!
//! The last line of stdout is `expected: ...`: `cache_bytes` is exactly the bytes allocated in
//! `remember_response` that are alive at the last tick (entries × entry size). The cache's
//! hash table is sized once, up front, in `Service::new` (a real service would let it grow;
//! we size it so every byte `remember_response` adds is a response body and the figure is
//! exact — hashbrown's table layout is an implementation detail).

#[global_allocator]
static GLOBAL: stackheap::StackHeap = stackheap::StackHeap::system();

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::{Duration, Instant};

use stackheap_demos::{Args, Expected, Flag};
use tracing_subscriber::layer::SubscriberExt;

const PROGRAM: &str = "growth";
const ABOUT: &str =
    "a service loop: flat request churn, a flat bounded buffer, and a cache that grows every tick";
const FLAGS: &[Flag] = &[
    Flag {
        name: "ticks",
        default: 100,
        help: "ticks of the service loop (one cache entry each)",
    },
    Flag {
        name: "tick-ms",
        default: 10,
        help: "milliseconds to sleep between ticks",
    },
    Flag {
        name: "requests",
        default: 200,
        help: "requests handled per tick (allocated and freed)",
    },
    Flag {
        name: "entry-size",
        default: 16384,
        help: "bytes of each cached response",
    },
    Flag {
        name: "recent",
        default: 16,
        help: "capacity of the bounded buffer of recent responses",
    },
];

/// Bytes of each response kept in the bounded buffer.
const RECENT_ITEM_BYTES: usize = 256;

/// The service state that outlives a tick.
struct Service {
    /// The bug: response bodies by tick, never evicted.
    cache: HashMap<u64, Vec<u8>>,
    /// The right way: the last `recent_cap` responses, oldest dropped first.
    recent: VecDeque<Vec<u8>>,
    recent_cap: usize,
}

impl Service {
    fn new(expected_ticks: usize, recent_cap: usize) -> Self {
        Service {
            // Sized once here (see the module docs): the table is one allocation made
            // outside `remember_response`, so that function's live bytes are only bodies.
            cache: HashMap::with_capacity(expected_ticks),
            recent: VecDeque::with_capacity(recent_cap),
            recent_cap,
        }
    }

    /// Handles one request: builds a body and a response, then frees both. Returns a checksum.
    #[inline(never)]
    fn handle_request(&self, tick: u64, req: u64) -> u64 {
        let len = 64 + ((tick * 31 + req * 17) % 960) as usize;
        let body: Vec<u8> = (0..len).map(|i| (i as u64 ^ req) as u8).collect();
        let response = String::from_utf8_lossy(&body).into_owned();
        black_box(&response);
        body.iter().map(|&b| u64::from(b)).sum::<u64>() + response.len() as u64
    } // body and response are freed here

    /// Keeps the last `recent_cap` responses: pop the oldest before pushing, so the deque
    /// never grows past the capacity it was created with.
    #[inline(never)]
    fn keep_recent(&mut self, tick: u64) {
        if self.recent_cap == 0 {
            return;
        }
        if self.recent.len() == self.recent_cap {
            drop(self.recent.pop_front());
        }
        self.recent.push_back(vec![tick as u8; RECENT_ITEM_BYTES]);
    }

    /// THE BUG: remembers this tick's response forever. Each call allocates one block of
    /// `response.len()` bytes (`to_vec` allocates exactly the length) that is never evicted.
    #[inline(never)]
    fn remember_response(&mut self, tick: u64, response: &[u8]) {
        self.cache.insert(tick, response.to_vec());
    }

    /// Bytes held by cache entries (their buffers' capacities).
    fn cache_bytes(&self) -> u64 {
        self.cache.values().map(|v| v.capacity() as u64).sum()
    }
}

fn main() {
    let args = Args::parse_or_exit(PROGRAM, ABOUT, FLAGS);
    args.require_range(PROGRAM, "ticks", 0, 1 << 24);
    args.require_range(PROGRAM, "tick-ms", 0, 60_000);
    args.require_range(PROGRAM, "requests", 0, 1 << 24);
    args.require_range(PROGRAM, "entry-size", 1, 1 << 30);
    args.require_range(PROGRAM, "recent", 0, 1 << 20);
    let ticks = args.get("ticks");
    let tick_ms = args.get("tick-ms");
    let requests = args.get("requests");
    let entry_size = args.get_usize("entry-size");
    let recent = args.get_usize("recent");
    drop(args);

    // Request handling runs in a `request` tracing span; stackheap's layer charges the
    // allocations made inside it to the span (flame-spans.svg).
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(stackheap::SpanLayer::new()),
    );
    let mut service = Service::new(ticks as usize, recent);
    // One reusable response template; remember_response copies it, so the template itself
    // (allocated once, here) is not part of the cache's growth.
    let mut template = vec![0u8; entry_size];
    let mut checksum = 0u64;
    // Marks for `stackheap diff TRACE --from warmup --to end`: `warmup` after the first
    // tenth of the ticks, `end` when serving stops (before the service is dropped).
    let warmup_ticks = ticks / 10;
    let start = Instant::now();
    let mut warm = None;
    for tick in 0..ticks {
        if tick == warmup_ticks {
            stackheap::mark("warmup");
            warm = Some((Instant::now(), service.cache_bytes()));
        }
        for req in 0..requests {
            let _span = tracing::info_span!("request").entered();
            checksum = checksum.wrapping_add(service.handle_request(tick, req));
        }
        service.keep_recent(tick);
        template[(tick as usize) % entry_size] = tick as u8;
        service.remember_response(tick, &template);
        if tick_ms > 0 {
            std::thread::sleep(Duration::from_millis(tick_ms));
        }
    }

    let serving = start.elapsed();
    stackheap::mark("end");
    let entries = service.cache.len() as u64;
    let cache_bytes = service.cache_bytes();
    // The cache's growth rate by our own clock, over the whole loop and after warm-up.
    let rate = (cache_bytes as f64 / serving.as_secs_f64().max(1e-9)).round() as u64;
    let rate_after_warmup = warm.map_or(rate, |(t, b)| {
        ((cache_bytes - b) as f64 / t.elapsed().as_secs_f64().max(1e-9)).round() as u64
    });
    assert_eq!(cache_bytes, entries * entry_size as u64);
    let recent_bytes: u64 = service.recent.iter().map(|v| v.capacity() as u64).sum();

    println!("checksum: {checksum}");
    println!(
        "after {ticks} ticks: cache holds {entries} entries = {cache_bytes} bytes \
         (grows {entry_size} bytes/tick); recent buffer {} items = {recent_bytes} bytes (flat)",
        service.recent.len()
    );
    println!(
        "{}",
        Expected::new()
            .add("ticks", ticks)
            .add("cache_entries", entries)
            .add("cache_bytes", cache_bytes)
            .add("cache_bytes_per_tick", entry_size as u64)
            .add("requests_per_tick", requests)
            .add("recent_items", service.recent.len() as u64)
            .add("recent_bytes", recent_bytes)
            .add("cache_rate_bytes_per_s", rate)
            .add("cache_rate_after_warmup_bytes_per_s", rate_after_warmup)
            .add("serving_ms", serving.as_millis() as u64)
            .line()
    );
    drop(service); // everything is freed at the end: growth, not a leak at exit
}
