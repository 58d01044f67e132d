//! The live terminal view of `stackheap attach PID` (ratatui): heap and RSS over the
//! last minutes, the top sites by live bytes and by growth (read from the program's
//! trace as it grows, [`stackheap_report::follow::Follow`]), each thread's deepest stack
//! against its limit. Keys: `s` snapshot, `m` mark, `q` quit (the program keeps running).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Cell, Chart, Dataset, Gauge, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;
use stackheap_report::follow::{Follow, LiveSite};
use stackheap_report::render::{fmt_bytes, fmt_time};

use crate::attach::Conn;

/// Seconds of history the chart shows.
const CHART_SECONDS: f64 = 300.0;
/// Most trace events read per refresh (a long trace is caught up over several).
const CATCH_UP_EVENTS: u64 = 2_000_000;
/// Seconds over which growth is measured.
const GROWTH_WINDOW_S: u64 = 60;

/// One thread's row.
struct ThreadRow {
    name: String,
    tid: u64,
    max_depth: u64,
    limit: u64,
}

/// Everything the view shows, refreshed every interval.
struct View {
    pid: u32,
    trace: PathBuf,
    out: PathBuf,
    started: Instant,
    /// (seconds since attach, bytes)
    heap: VecDeque<(f64, f64)>,
    rss: VecDeque<(f64, f64)>,
    stats: Value,
    threads: Vec<ThreadRow>,
    top_live: Vec<(LiveSite, String)>,
    top_growth: Vec<(LiveSite, String)>,
    growth_window: f64,
    status: String,
    snapshots: u32,
    marks: u32,
    ended: bool,
}

/// Run the view until `q`; the program keeps running.
pub fn run(mut conn: Conn, out: &Path, interval: Duration) -> Result<ExitCode> {
    let first = conn.stats()?;
    let trace = conn.hello.trace.clone();
    let complete = first["trace_bytes"].as_u64().unwrap_or(0);
    let follow = if conn.hello.sample_rate == 0 {
        None
    } else {
        Some(
            Follow::open(&trace, complete, GROWTH_WINDOW_S)
                .with_context(|| format!("reading the live trace {}", trace.display()))?,
        )
    };
    let mut view = View {
        pid: conn.hello.pid,
        trace,
        out: out.to_path_buf(),
        started: Instant::now(),
        heap: VecDeque::new(),
        rss: VecDeque::new(),
        stats: Value::Null,
        threads: Vec::new(),
        top_live: Vec::new(),
        top_growth: Vec::new(),
        growth_window: 0.0,
        status: if follow.is_none() {
            "counters only (STACKHEAP_SAMPLE=0): no sites, no snapshots".to_string()
        } else {
            String::new()
        },
        snapshots: 0,
        marks: 0,
        ended: false,
    };
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = event_loop(&mut terminal, &mut conn, follow, &mut view, first, interval);
    ratatui::restore();
    result?;
    if view.ended {
        eprintln!("stackheap: process {} stopped profiling", view.pid);
    }
    Ok(ExitCode::SUCCESS)
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    conn: &mut Conn,
    mut follow: Option<Follow>,
    view: &mut View,
    first: Value,
    interval: Duration,
) -> Result<()> {
    view.update(first, follow.as_mut());
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|f| view.draw(f))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') if !view.ended => {
                        view.status = "taking a snapshot…".to_string();
                        terminal.draw(|f| view.draw(f))?;
                        view.snapshots += 1;
                        let dir = view.out.join(format!("snapshot-{}", view.snapshots));
                        let taken = match follow.as_mut() {
                            Some(f) => crate::attach::snapshot_followed(conn, f, &dir),
                            None => crate::attach::snapshot(conn, &dir),
                        };
                        view.status = match taken {
                            Ok(s) => format!(
                                "{} -> {}",
                                s.line(view.pid),
                                s.files
                                    .first()
                                    .map(|p| p.display().to_string())
                                    .unwrap_or_default()
                            ),
                            Err(e) => format!("snapshot failed: {e:#}"),
                        };
                    }
                    KeyCode::Char('m') if !view.ended => {
                        view.marks += 1;
                        let name = format!("attach-{}", view.marks);
                        view.status = match conn.mark(&name) {
                            Ok(()) => format!("mark {name} written into {}", view.trace.display()),
                            Err(e) => format!("mark failed: {e:#}"),
                        };
                    }
                    _ => {}
                }
            }
            continue;
        }
        next = Instant::now() + interval;
        if view.ended {
            continue;
        }
        match conn.stats() {
            Ok(s) => view.update(s, follow.as_mut()),
            Err(e) => {
                view.ended = true;
                view.status = format!("{e:#}; press q to leave");
            }
        }
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .or_else(|| v[k].as_i64().map(|x| x.max(0) as u64))
        .unwrap_or(0)
}

impl View {
    fn update(&mut self, stats: Value, follow: Option<&mut Follow>) {
        let t = self.started.elapsed().as_secs_f64();
        self.heap.push_back((t, u(&stats, "live_bytes") as f64));
        self.rss.push_back((t, u(&stats, "rss_bytes") as f64));
        for q in [&mut self.heap, &mut self.rss] {
            while q.front().is_some_and(|&(x, _)| x < t - CHART_SECONDS) {
                q.pop_front();
            }
        }
        self.threads = stats["threads"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|th| ThreadRow {
                        name: th["name"].as_str().unwrap_or("").to_string(),
                        tid: u(th, "tid"),
                        max_depth: u(th, "max_depth"),
                        limit: u(th, "limit"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(f) = follow {
            match f.poll_at_most(u(&stats, "trace_bytes"), CATCH_UP_EVENTS) {
                Ok(_) => {
                    let name = |f: &mut Follow, s: LiveSite| {
                        let n = f.site_name(s.stack);
                        (s, n)
                    };
                    self.top_live = f.top_live(8).into_iter().map(|s| name(f, s)).collect();
                    self.top_growth = f.top_growth(8).into_iter().map(|s| name(f, s)).collect();
                    self.growth_window = f.growth_window_s();
                }
                Err(e) => self.status = format!("reading the trace: {e}"),
            }
        }
        if stats["active"] == Value::Bool(false) {
            self.ended = true;
        }
        self.stats = stats;
    }

    fn draw(&self, f: &mut Frame) {
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(3),
                Constraint::Min(8),
                Constraint::Length(11),
                Constraint::Length((self.threads.len().min(6) + 2) as u16),
                Constraint::Length(2),
            ])
            .split(f.area());
        self.header(f, rows[0]);
        self.chart(f, rows[1]);
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
            .split(rows[2]);
        let live: Vec<Row> = self
            .top_live
            .iter()
            .map(|(s, n)| {
                Row::new(vec![
                    Cell::from(fmt_bytes(s.bytes)),
                    Cell::from(s.blocks.to_string()),
                    Cell::from(n.clone()),
                ])
            })
            .collect();
        f.render_widget(
            Table::new(
                live,
                [
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Min(10),
                ],
            )
            .header(Row::new(vec!["live", "blocks", "site"]).style(bold()))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("top sites by live bytes"),
            ),
            cols[0],
        );
        let growth: Vec<Row> = self
            .top_growth
            .iter()
            .map(|(s, n)| {
                Row::new(vec![
                    Cell::from(format!("+{}", fmt_bytes(s.growth_bytes.max(0) as u64))),
                    Cell::from(format!("{}/s", fmt_bytes(s.growth_per_s.max(0.0) as u64))),
                    Cell::from(n.clone()),
                ])
            })
            .collect();
        f.render_widget(
            Table::new(
                growth,
                [
                    Constraint::Length(11),
                    Constraint::Length(11),
                    Constraint::Min(10),
                ],
            )
            .header(Row::new(vec!["grew", "rate", "site"]).style(bold()))
            .block(Block::default().borders(Borders::ALL).title(format!(
                "top sites by growth (last {:.0} s)",
                self.growth_window
            ))),
            cols[1],
        );
        self.threads(f, rows[3]);
        let keys = Line::from(vec![
            Span::styled(" s", bold()),
            Span::raw(" snapshot  "),
            Span::styled("m", bold()),
            Span::raw(" mark  "),
            Span::styled("q", bold()),
            Span::raw(" quit (the process keeps running)   "),
            Span::styled(self.status.clone(), Style::default().fg(Color::Yellow)),
        ]);
        f.render_widget(Paragraph::new(keys), rows[4]);
    }

    fn header(&self, f: &mut Frame, area: Rect) {
        let s = &self.stats;
        let text = format!(
            "live {} in {} blocks   peak {}   RSS {}   allocs {}   frees {}   at {}{}",
            fmt_bytes(u(s, "live_bytes")),
            u(s, "live_blocks"),
            fmt_bytes(u(s, "peak_bytes")),
            fmt_bytes(u(s, "rss_bytes")),
            u(s, "total_allocs"),
            u(s, "total_frees"),
            fmt_time(u(s, "time_ns")),
            if self.ended { "   [stopped]" } else { "" },
        );
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(format!(
                "stackheap attach {} — {}",
                self.pid,
                self.trace.display()
            ))),
            area,
        );
    }

    fn chart(&self, f: &mut Frame, area: Rect) {
        let heap: Vec<(f64, f64)> = self.heap.iter().copied().collect();
        let rss: Vec<(f64, f64)> = self.rss.iter().copied().collect();
        let t1 = heap.last().map_or(1.0, |p| p.0).max(1.0);
        let t0 = (t1 - CHART_SECONDS).max(0.0);
        let ymax = heap
            .iter()
            .chain(rss.iter())
            .map(|p| p.1)
            .fold(1.0f64, f64::max)
            * 1.1;
        let datasets = vec![
            Dataset::default()
                .name("heap")
                .marker(symbols::Marker::Braille)
                .graph_type(ratatui::widgets::GraphType::Line)
                .style(Style::default().fg(Color::Red))
                .data(&heap),
            Dataset::default()
                .name("RSS")
                .marker(symbols::Marker::Braille)
                .graph_type(ratatui::widgets::GraphType::Line)
                .style(Style::default().fg(Color::Cyan))
                .data(&rss),
        ];
        let chart = Chart::new(datasets)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("heap and RSS since attach"),
            )
            .x_axis(Axis::default().bounds([t0, t1]).labels(vec![
                Span::raw(format!("{t0:.0} s")),
                Span::raw(format!("{t1:.0} s")),
            ]))
            .y_axis(Axis::default().bounds([0.0, ymax]).labels(vec![
                Span::raw("0"),
                Span::raw(fmt_bytes((ymax / 2.0) as u64)),
                Span::raw(fmt_bytes(ymax as u64)),
            ]));
        f.render_widget(chart, area);
    }

    fn threads(&self, f: &mut Frame, area: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title("deepest stack of each thread against its limit");
        let inner = block.inner(area);
        f.render_widget(block, area);
        let n = self.threads.len().min(inner.height as usize);
        if n == 0 {
            return;
        }
        let lines = Layout::default()
            .direction(Direction::Vertical)
            .constraints(vec![Constraint::Length(1); n])
            .split(inner);
        for (th, area) in self.threads.iter().zip(lines.iter()) {
            let ratio = if th.limit > 0 {
                (th.max_depth as f64 / th.limit as f64).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let label = format!(
                "{} ({}): {} of {}",
                if th.name.is_empty() { "?" } else { &th.name },
                th.tid,
                fmt_bytes(th.max_depth),
                if th.limit > 0 {
                    fmt_bytes(th.limit)
                } else {
                    "unknown".to_string()
                }
            );
            f.render_widget(
                Gauge::default()
                    .ratio(ratio)
                    .label(label)
                    .gauge_style(Style::default().fg(if ratio > 0.8 {
                        Color::Red
                    } else {
                        Color::Green
                    })),
                *area,
            );
        }
    }
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}
